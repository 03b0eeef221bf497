"""Guards of every route: sign-in off loopback, no state change asked for by another site's page, no
request for a rebound DNS name, no server path in a problem, bounded memory of what clients were served."""

from __future__ import annotations

import pytest

#: Operations anyone may call: whether sign-in is on, and trading a token for itself.
OPEN = {("get", "/auth/"), ("post", "/auth/token")}


def _operations(app) -> list[tuple[str, str]]:
    """``(method, path)`` of every operation of the OpenAPI spec, path parameters filled in."""
    filled = {"{case_id}": "c0", "{job_id}": "1", "{name}": "x.png", "{model}": "segloop"}
    filled["{strategy}"] = "random"
    operations = []
    for path, methods in app.openapi()["paths"].items():
        for key, value in filled.items():
            path = path.replace(key, value)
        operations += [(method, path) for method in methods]
    return operations


def test_off_loopback_every_operation_but_sign_in_needs_a_token(make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=(), host="0.0.0.0")
    operations = _operations(client.app)
    assert len(operations) > 30  # the spec lists the API
    refused = {(method, path): client.request(method, path).status_code for method, path in operations}
    let_through = {op: status for op, status in refused.items() if status != 401 and op not in OPEN}
    assert let_through == {}


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://testserver.evil"])
def test_a_state_change_sent_by_another_site_s_page_is_refused(client, origin):
    response = client.post("/train/segloop", headers={"Origin": origin})
    assert response.status_code == 403, response.text
    assert "was refused" in response.json()["detail"]
    assert client.app.state.project.list_jobs() == []  # nothing started


def test_the_server_s_own_pages_clients_without_origin_and_allowed_origins_pass(make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=(), cors_origins=("http://viewer.example",))
    # (a 422 or 409 is the route answering: the guard let it through)
    for headers in ({}, {"Origin": "http://testserver"}, {"Origin": "http://viewer.example"}):
        response = client.post("/api/jobs", json={"kind": "nothing"}, headers=headers)
        assert response.status_code == 422, response.text
    assert client.get("/api/project", headers={"Origin": "https://evil.example"}).status_code == 200
    proxied = {"Origin": "https://segloop.example", "X-Forwarded-Host": "segloop.example"}
    assert client.post("/api/jobs", json={"kind": "nothing"}, headers=proxied).status_code == 422
    # a bearer token is never sent by a browser on its own: whoever sent it holds it (here: 401, not 403)
    signed = {"Origin": "https://evil.example", "Authorization": "Bearer not-a-token"}
    assert client.post("/api/jobs", json={"kind": "nothing"}, headers=signed).status_code == 401


def test_problems_name_no_path_of_the_server(client):
    root = client.app.state.project.root
    for method, path in [("get", "/api/cases/zz"), ("get", "/api/jobs/99"), ("get", "/edit/zz")]:
        response = client.request(method, path)
        assert response.status_code == 404
        assert str(root) not in response.text and "<project>" in response.json()["detail"]


def test_a_page_fetched_as_a_static_file_carries_the_pages_policy(client):
    response = client.get("/static/editor.html")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example"])
def test_on_anonymous_loopback_a_request_for_another_host_name_is_refused(make_client, host):
    client = make_client(count=1, shape=(8, 8, 4), labeled=())
    response = client.get("/api/cases", headers={"Host": host})  # a page that rebound its name to us
    assert response.status_code == 403, response.text
    assert "not " + repr(host) in response.json()["detail"]


LOCAL_HOSTS = ["127.0.0.1:80", "localhost", "[::1]:80", "app.localhost:8", "10.1.2.3", "box"]


@pytest.mark.parametrize("host", LOCAL_HOSTS)
def test_addresses_localhost_and_names_without_a_dot_are_answered(make_client, host):
    client = make_client(count=1, shape=(8, 8, 4), labeled=())
    assert client.get("/api/cases", headers={"Host": host}).status_code == 200


def test_a_server_that_asks_for_sign_in_answers_every_host_name(make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=(), require_sign_in=True)
    assert client.get("/api/cases", headers={"Host": "segloop.example"}).status_code == 401


def test_the_heads_served_to_monailabel_clients_are_bounded(client):
    from segloop.server.routes.monailabel import ServedHeads

    project = client.app.state.project
    served = ServedHeads(max_entries=2)
    served.record("c0", "ana", 7)
    served.record("c0", "ben", 8)
    served.record("c0", "ana", 9)  # ana is the newest again
    served.record("c0", "kim", 10)  # ben, the oldest, is forgotten: he saves on the current head
    assert [served.parent(project, "c0", who) for who in ("ana", "kim")] == [9, 10]
    assert served.parent(project, "c0", "ben") == project.find_head("c0")


def test_off_loopback_the_editor_page_does_not_tell_whether_a_case_exists(make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=(), host="0.0.0.0")
    assert client.get("/edit/c0").status_code == client.get("/edit/nobody").status_code == 200
    assert client.get("/edit/..x").status_code == 422
