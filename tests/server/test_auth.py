"""Sign-in: bearer tokens of project users or of a users file; required off loopback."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from segloop.errors import InvalidInputError
from segloop.loop.users import create_user, hash_token
from segloop.server import Settings, create_app
from segloop.server.codec import volume_to_nifti_gz


@pytest.fixture
def serve(make_client):
    def make(**settings) -> tuple[TestClient, str]:
        client = make_client(count=1, shape=(8, 8, 4), labeled=(), **settings)
        _, token = create_user(client.app.state.project, "ana")
        return client, token

    return make


def _headers(token: str | None, scheme: str = "Bearer") -> dict[str, str]:
    return {} if token is None else {"Authorization": f"{scheme} {token}"}


def _whoami(client: TestClient, token: str | None = None, scheme: str = "Bearer"):
    """``GET /api/project`` (its ``author``: who the server takes the caller for)."""
    return client.get("/api/project", headers=_headers(token, scheme))


def _author(response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["author"]


def _assert_401(response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert (body["status"], body["title"]) == (401, "Sign-in required") and detail in body["detail"]
    assert "\n" not in body["detail"]


def test_on_loopback_an_anonymous_request_stores_as_the_local_author(serve):
    client, token = serve(local_author="kim")
    assert _author(_whoami(client)) == "kim"
    assert _author(_whoami(client, token)) == "ana"
    _assert_401(_whoami(client, token + "x"), "the token is no user's")


def test_off_loopback_every_request_needs_a_user_s_token(serve):
    client, token = serve(host="0.0.0.0")
    _assert_401(_whoami(client), "sign-in required")
    _assert_401(_whoami(client, "not-a-token"), "the token is no user's")
    _assert_401(_whoami(client, token, scheme="Basic"), "got a 'Basic' header")
    _assert_401(_whoami(client, "", scheme="Bearer"), "got no token")
    response = _whoami(client, token)
    assert _author(response) == "ana" and response.json()["sign_in_required"] is True


def test_what_a_signed_in_request_stores_is_recorded_under_the_user_s_name(serve):
    client, token = serve(host="0.0.0.0", local_author="kim")
    project = client.app.state.project
    case = project.get_case("c0")
    body = volume_to_nifti_gz(np.ones(case.shape, np.uint8), case.affine, dtype=np.uint8)
    url = "/api/cases/c0/draft"
    headers = {"Content-Type": "application/gzip", "If-Match": '"none"'}
    _assert_401(client.put(url, content=body, headers=headers), "sign-in required")
    assert project.list_drafts() == []
    response = client.put(url, content=body, headers={**headers, **_headers(token)})
    assert response.status_code == 201, response.text
    assert [(d.case_id, d.author) for d in project.list_drafts()] == [("c0", "ana")]


def test_sign_in_can_be_required_on_loopback_and_a_removed_user_is_refused(serve):
    client, token = serve(require_sign_in=True)
    _assert_401(_whoami(client), "sign-in required")
    assert _author(_whoami(client, token)) == "ana"
    client.app.state.project.remove_user("ana")
    _assert_401(_whoami(client, token), "the token is no user's")


def test_users_of_the_users_file_sign_in(serve, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text(f'lee = "{hash_token("lee-token")}"\n')
    client, token = serve(host="0.0.0.0", users_file=users)
    users.write_text("")  # read once, when the app was made
    assert _author(_whoami(client, "lee-token")) == "lee"
    assert _author(_whoami(client, token)) == "ana"
    _assert_401(_whoami(client, "other-token"), "the token is no user's")


def test_a_bad_users_file_stops_the_app_from_being_made(tmp_path, make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=())
    users = tmp_path / "users.toml"
    users.write_text('lee = "plain-token"\n')
    with pytest.raises(InvalidInputError, match="token hash of user 'lee'"):
        create_app(client.app.state.project, Settings(users_file=users))
