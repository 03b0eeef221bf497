"""Sign-in: bearer tokens of project users or of a users file; required off loopback."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from segloop.errors import InvalidInputError
from segloop.loop.users import create_user, hash_token
from segloop.server import Settings, create_app
from segloop.server.deps import Author


def _with_whoami(client: TestClient) -> TestClient:
    """The client's app with a test-only route answering the author a store would record."""

    @client.app.get("/test/whoami")
    def whoami(author: Author) -> dict[str, str]:
        return {"author": author}

    return client


@pytest.fixture
def serve(make_client):
    def make(**settings) -> tuple[TestClient, str]:
        client = _with_whoami(make_client(count=1, shape=(8, 8, 4), labeled=(), **settings))
        _, token = create_user(client.app.state.project, "ana")
        return client, token

    return make


def _whoami(client: TestClient, token: str | None = None, scheme: str = "Bearer"):
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    return client.get("/test/whoami", headers=headers)


def _assert_401(response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert (body["status"], body["title"]) == (401, "Sign-in required") and detail in body["detail"]
    assert "\n" not in body["detail"]


def test_on_loopback_an_anonymous_request_stores_as_the_local_author(serve):
    client, token = serve(local_author="kim")
    assert _whoami(client).json() == {"author": "kim"}
    assert _whoami(client, token).json() == {"author": "ana"}
    _assert_401(_whoami(client, token + "x"), "the token is no user's")


def test_off_loopback_every_request_needs_a_user_s_token(serve):
    client, token = serve(host="0.0.0.0")
    _assert_401(_whoami(client), "sign-in required")
    _assert_401(_whoami(client, "not-a-token"), "the token is no user's")
    _assert_401(_whoami(client, token, scheme="Basic"), "got a 'Basic' header")
    _assert_401(_whoami(client, "", scheme="Bearer"), "got no token")
    response = _whoami(client, token)
    assert response.status_code == 200 and response.json() == {"author": "ana"}


def test_sign_in_can_be_required_on_loopback_and_a_removed_user_is_refused(serve):
    client, token = serve(require_sign_in=True)
    _assert_401(_whoami(client), "sign-in required")
    assert _whoami(client, token).json() == {"author": "ana"}
    client.app.state.project.remove_user("ana")
    _assert_401(_whoami(client, token), "the token is no user's")


def test_users_of_the_users_file_sign_in(serve, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text(f'lee = "{hash_token("lee-token")}"\n')
    client, token = serve(host="0.0.0.0", users_file=users)
    users.write_text("")  # read once, when the app was made
    assert _whoami(client, "lee-token").json() == {"author": "lee"}
    assert _whoami(client, token).json() == {"author": "ana"}
    _assert_401(_whoami(client, "other-token"), "the token is no user's")


def test_a_bad_users_file_stops_the_app_from_being_made(tmp_path, make_client):
    client = make_client(count=1, shape=(8, 8, 4), labeled=())
    users = tmp_path / "users.toml"
    users.write_text('lee = "plain-token"\n')
    with pytest.raises(InvalidInputError, match="token hash of user 'lee'"):
        create_app(client.app.state.project, Settings(users_file=users))
