"""The store's messages name no commands; the command line adds the one that helps."""

from __future__ import annotations

import pytest

from segloop.errors import NotFoundError
from segloop.loop.cases import init_project
from segloop.store import Project


def test_store_messages_name_no_command(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    for call in (
        lambda: Project.open(tmp_path / "nothing"),
        lambda: project.get_case("x"),
        lambda: project.get_model(3),
    ):
        with pytest.raises(NotFoundError) as caught:
            call()
        assert "segloop " not in str(caught.value).replace("segloop project", "")


def test_the_cli_adds_the_command(run_cli, tmp_path):
    missing = run_cli("status", tmp_path / "nothing")
    assert missing.code == 1 and missing.err.rstrip().endswith("(run `segloop init`)")
    assert run_cli("init", tmp_path / "p", "--labels", "a").code == 0
    unknown = run_cli("show", tmp_path / "p", "x")
    assert unknown.code == 1 and unknown.err.rstrip().endswith("(see `segloop status`)")
