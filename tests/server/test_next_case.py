"""GET /api/next: served from the newest recorded ranking while it is fresh, ranked anew otherwise."""

from __future__ import annotations

import numpy as np
import pytest

import segloop.loop.review as review
from segloop.server.presence import Presence
from tests.server.test_cases_api import add_prediction, label_of, project_of, put_label


@pytest.fixture
def ranks(monkeypatch) -> list[str]:
    """The strategies `rank_cases` ranked with (``serve_next_case``'s calls), in call order."""
    calls: list[str] = []
    real = review.rank_cases

    def counted(project, **options):
        calls.append(options["strategy"])
        return real(project, **options)

    monkeypatch.setattr(review, "rank_cases", counted)
    return calls


def correct_whole(client, case_id: str) -> None:
    """A person saves the case's label as shown, for every class (a ``revised`` version)."""
    labels, etag = label_of(client, case_id)
    assert put_label(client, case_id, labels, etag).status_code == 201


def test_next_is_served_from_the_recorded_ranking_without_ranking_again(client, ranks):
    project = project_of(client)
    first = client.get("/api/next").json()
    ranking = project.find_latest_ranking()
    assert ranks == ["uncertainty"] and first["case_id"] == "c1" and first["rank"] == 1
    assert client.get("/api/next").json() == first
    assert ranks == ["uncertainty"] and project.find_latest_ranking() == ranking  # nothing recorded again
    served = project.list_events("served")
    assert [e.detail.get("from_ranking") for e in served] == [None, ranking]
    assert served[1].detail["cases"] == ["c1"] and served[1].actor == "local"


def test_refresh_ranks_anew_and_records_the_ranking(client, ranks):
    project = project_of(client)
    client.get("/api/next")
    ranking = project.find_latest_ranking()
    assert client.get("/api/next?refresh=true").json()["case_id"] == "c1"
    assert ranks == ["uncertainty", "uncertainty"] and project.find_latest_ranking() > ranking


def test_a_prediction_stored_after_the_ranking_makes_it_stale(client, ranks):
    project = project_of(client)
    assert client.get("/api/next").json()["case_id"] == "c1"  # nothing predicted: project order
    add_prediction(project, "c2", hot_slice=4)
    body = client.get("/api/next").json()
    assert ranks == ["uncertainty", "uncertainty"]
    assert body["case_id"] == "c2" and body["rank"] == 1 and body["score"] is not None  # scored first


def test_cases_corrected_since_the_ranking_are_skipped_then_everything_is_decided(client, ranks):
    project = project_of(client)
    client.get("/api/next")
    ranking = project.find_latest_ranking()
    correct_whole(client, "c1")
    body = client.get("/api/next").json()
    assert ranks == ["uncertainty"] and project.find_latest_ranking() == ranking
    assert body == {"case_id": "c2", "classes": list(project.config.schema.names), "rank": 2,
                    "score": None, "strategy": "uncertainty"}  # fmt: skip
    correct_whole(client, "c2")  # the ranking has nothing open left: ranked anew, and nothing is left
    response = client.get("/api/next")
    assert response.status_code == 404 and ranks == ["uncertainty", "uncertainty"]


def test_classes_a_person_decided_since_are_left_out(client):
    project = project_of(client)
    client.get("/api/next")
    liver = project.config.schema.names[0]
    labels, etag = label_of(client, "c2")
    assert put_label(client, "c2", labels, etag, query=f"?classes={liver}").status_code == 201
    correct_whole(client, "c1")
    client.get("/api/next?refresh=true")
    body = client.get("/api/next").json()
    assert body["case_id"] == "c2" and body["classes"] == list(project.config.schema.names[1:])


def test_cases_someone_else_edits_are_passed_over_while_others_remain(client, ranks):
    presence = client.app.state.presence = Presence()
    presence.touch("ben", "c1")
    assert client.get("/api/next").json()["case_id"] == "c2"  # just ranked: c1 first, ben has it
    assert client.get("/api/next").json()["case_id"] == "c2"  # from the ranking
    presence.touch("ben", "c2")  # one case per person: ben left c1
    presence.touch("local", "c1")  # the caller's own case is no reason to pass it over
    assert client.get("/api/next").json()["case_id"] == "c1"
    presence.touch("carl", "c1")
    assert client.get("/api/next").json()["case_id"] == "c1"  # everything open is edited: the first
    assert ranks == ["uncertainty"]


def test_rankings_recorded_without_their_newest_ids_are_ranked_anew(client, ranks):
    project = project_of(client)
    project.record_ranking("old", {"cases": ["c2"], "strategy": "uncertainty"}, [("c2", None), ("c1", None)])
    assert client.get("/api/next").json()["case_id"] == "c1" and ranks == ["uncertainty"]


def test_each_strategy_serves_from_its_own_ranking(client, ranks):
    assert client.get("/api/next?strategy=random").status_code == 200
    assert client.get("/api/next").status_code == 200
    assert client.get("/api/next?strategy=random").status_code == 200
    assert ranks == ["random", "uncertainty"]


def test_least_recent_rotates_from_one_ranking_then_ranks_again(client, ranks):
    served = [client.get("/api/next?strategy=least-recent").json()["case_id"] for _ in range(3)]
    assert served[:2] in (["c1", "c2"], ["c2", "c1"]) and served[2] == served[0]
    assert ranks == ["least-recent", "least-recent"]
    assert np.all([e.actor == "local" for e in project_of(client).list_events("served")])
