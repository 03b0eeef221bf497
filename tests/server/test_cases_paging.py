"""`GET /api/cases` in pages (offset, limit, sort, filter) and `GET /api/project`'s count."""

from __future__ import annotations

import pytest

from segloop.server.presence import Presence


@pytest.fixture
def client(make_client):
    """Five phantoms c0..c4, c0 labelled."""
    return make_client(count=5, shape=(8, 8, 4))


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["cases"]]


def test_pages_say_how_many_cases_the_filter_keeps(client):
    first = client.get("/api/cases?limit=2")
    assert ids(first) == ["c0", "c1"]
    assert {k: v for k, v in first.json().items() if k != "cases"} == {
        "total": 5, "offset": 0, "limit": 2, "sort": "added"
    }  # fmt: skip
    assert ids(client.get("/api/cases?offset=4&limit=2")) == ["c4"]
    assert ids(client.get("/api/cases?sort=-id&limit=3")) == ["c4", "c3", "c2"]
    assert ids(client.get("/api/cases?sort=-versions&limit=1")) == ["c0"]
    filtered = client.get("/api/cases", params={"filter": "C3"})
    assert ids(filtered) == ["c3"] and filtered.json()["total"] == 1
    assert client.get("/api/project").json()["n_cases"] == 5


def test_the_filter_finds_cases_by_their_editors(client):
    presence = Presence()
    presence.touch("zoe", "c2")
    client.app.state.presence = presence
    assert ids(client.get("/api/cases", params={"filter": "zoe"})) == ["c2"]
    assert ids(client.get("/api/cases", params={"filter": "zoe c2"})) == ["c2"]


def test_the_rank_order_follows_the_newest_recorded_ranking(client):
    project = client.app.state.project
    project.record_ranking("ann", {"strategy": "random", "cases": ["c3"]}, [("c3", None), ("c1", None)])
    rows = client.get("/api/cases?sort=rank&limit=3").json()["cases"]
    assert [(r["id"], r["rank"]) for r in rows] == [("c3", 1), ("c1", 2), ("c0", None)]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=-1", 422),
        ("limit=100000", 422),
        ("offset=-3", 422),
        ("offset=" + "9" * 30, 422),  # beyond any id: PostgreSQL's OFFSET overflowed into a 500
        ("sort=size", 422),
    ],
)
def test_bad_pages_are_refused(client, query, status):
    response = client.get(f"/api/cases?{query}")
    assert response.status_code == status
    if query == "sort=size":
        assert "unknown case order 'size': expected one of added, id" in response.text
