"""`segloop status` (a summary by default, a per-case table on request) and `segloop show`'s filters."""

from __future__ import annotations

import re

import pytest

from segloop.store import NewLabel
from tests.conftest import make_phantom_project


@pytest.fixture
def project(tmp_path):
    """Three phantoms: c0 pseudo-labelled, its liver then revised twice; c1 original; c2 unlabelled."""
    project = make_phantom_project(tmp_path, 3, (8, 8, 4), labeled=(0,), source="pseudo")
    [pseudo] = project.list_label_versions("c0")
    for author in ("zed", "bob"):
        liver = NewLabel(pseudo.object_key, "revised", ("liver",), {"liver": 1}, author, "editor", {})
        project.add_label_version("c0", liver)
    original = NewLabel(pseudo.object_key, "original", project.config.schema.names, {}, "cy", "import", {})
    project.add_label_version("c1", original)
    return project


def cells(out: str, row: str) -> list[str]:
    """The cells of the table row starting with ``row`` (rich's box characters stripped)."""
    line = next(line for line in out.splitlines() if re.match(rf"\W*{row}\b", line))
    return [cell.strip() for cell in re.split("[│┃]", line.strip("│┃ "))]


def test_status_summarises_classes_by_deciding_source_and_points_to_the_table(run_cli, project):
    result = run_cli("status", project.root)
    assert result.code == 0 and "3 cases, 4 label versions" in result.out
    header = cells(result.out, "class")
    assert header == ["class", "original", "revised", "pseudo", "none"]  # sources nobody uses are left out
    assert cells(result.out, "liver") == ["liver", "1", "1", "0", "1"]
    assert cells(result.out, "spleen") == ["spleen", "1", "0", "1", "1"]
    assert "c0" not in result.out and "--table" in result.out
    only = run_cli("status", project.root, "--class", "spleen")
    assert "liver" not in only.out and cells(only.out, "spleen")[0] == "spleen"


def test_status_shows_the_queue_head_and_unfinished_jobs(run_cli, project):
    assert run_cli("next", project.root, "--strategy", "random", "-n", "1").code == 0
    project.start_job("predict", author="ann", params={"unlabeled": True})
    result = run_cli("status", project.root)
    assert re.search(r"queue \(random, 2 cases\): c[02]", result.out)
    assert "predict job 1 (unlabeled True) running" in result.out


def test_the_case_table_filters_by_ids_class_and_source_and_says_how_many_more(run_cli, project):
    table = run_cli("status", project.root, "--table", "--limit", "2")
    assert table.code == 0 and "3 cases" in table.out and "… 1 more case (--limit 0 shows all)" in table.out
    assert "c1" in table.out and "c2" not in table.out
    revised = run_cli("status", project.root, "--source", "revised", "--class", "liver")
    assert (
        revised.out.splitlines()[0].strip() == "1 case"
        and cells(revised.out, "c0")[-1] == "R"
        and "spleen" not in revised.out
    )
    unlabelled = run_cli("status", project.root, "--source", "none")
    assert "c2" in unlabelled.out and "c1" not in unlabelled.out
    globbed = run_cli("status", project.root, "--cases", "c0,c[12]*,c?", "--class", "kidney_left")
    assert "3 cases" in globbed.out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("status", "--source", "ai"),
            "unknown label source 'ai': expected one of original, revised, sparse",
        ),
        (("status", "--class", "lung"), "unknown class 'lung': expected one of liver, spleen"),
        (("show", "c0", "--source", "none"), "unknown label source 'none': expected one of original"),
        (("show", "c0", "--class", "lung"), "unknown class 'lung'"),
    ],
)
def test_unknown_classes_and_sources_are_one_line_naming_the_choices(run_cli, project, args, expected):
    command, *rest = args
    result = run_cli(command, project.root, *rest)
    assert result.code == 1 and expected in result.err and result.err.count("\n") == 1


def test_show_filters_the_versions_of_a_case(run_cli, project):
    everything = run_cli("show", project.root, "c0")
    assert everything.code == 0 and "pseudo" in everything.out and "bob" in everything.out
    newest = run_cli("show", project.root, "c0", "--class", "liver", "--limit", "1")
    assert "bob" in newest.out and "zed" not in newest.out and "… 2 older versions" in newest.out
    pseudo = run_cli("show", project.root, "c0", "--source", "pseudo")
    assert "pseudo" in pseudo.out and "revised" not in pseudo.out
