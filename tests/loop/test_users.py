"""Users of `segloop serve`: random tokens, stored only hashed; a users file of hashes."""

from __future__ import annotations

import hashlib

import pytest

from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.loop.cases import init_project
from segloop.loop.users import authenticate, create_user, hash_token, read_users_file


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "p", ["liver"])


def test_a_new_user_token_authenticates_and_is_stored_only_hashed(project):
    user, token = create_user(project, "ana")
    assert user.name == "ana" and len(token) >= 43
    assert authenticate(project, token) == "ana"
    assert authenticate(project, token + "x") is None and authenticate(project, "") is None
    project.engine.dispose()
    stored = b"".join(p.read_bytes() for p in project.root.glob("segloop.db*"))
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert token.encode() not in stored


def test_tokens_differ_and_names_are_checked(project):
    _, first = create_user(project, "ana")
    _, second = create_user(project, "ben")
    assert first != second and authenticate(project, second) == "ben"
    with pytest.raises(ConflictError, match="'ana' exists already"):
        create_user(project, "ana")
    with pytest.raises(InvalidInputError, match=r"user name '\.\./x' is not allowed"):
        create_user(project, "../x")
    project.remove_user("ana")
    assert authenticate(project, first) is None


def test_users_of_a_file_authenticate_after_the_project_s_own(project, tmp_path):
    _, token = create_user(project, "ana")
    path = tmp_path / "users.toml"
    path.write_text(f'cleo = "{hash_token("cleo-token").upper()}"\nana2 = "{hash_token(token)}"\n')
    users = read_users_file(path)
    assert users == {"cleo": hash_token("cleo-token"), "ana2": hash_token(token)}
    assert authenticate(project, "cleo-token", users) == "cleo"
    assert authenticate(project, token, users) == "ana"  # the project's user first
    assert authenticate(project, "other", users) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('ana = "not-a-hash"', "token hash of user 'ana' .* got 10 characters"),
        ("ana = 3", "token hash of user 'ana' .* got int"),
        (f'"../x" = "{"a" * 64}"', r"user name '\.\./x' is not allowed"),
        ("ana = ", "cannot be read"),
        (f'ana = "{"a" * 64}"\nben = "{"A" * 64}"', "'ana' and 'ben' have the same token hash"),
    ],
)
def test_a_bad_users_file_is_one_line(tmp_path, text, match):
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=match) as caught:
        read_users_file(path)
    assert "\n" not in str(caught.value) and "not-a-hash" not in str(caught.value)


def test_a_missing_users_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        read_users_file(tmp_path / "none.toml")
