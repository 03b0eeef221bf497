"""`segloop demo` (what `make demo` runs): the loop with a simulated annotator, tiny budget."""

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_demo_runs_rounds_with_the_simulated_annotator(run_cli, tmp_path):
    result = run_cli("demo", "--folder", tmp_path, "--rounds", "2", "--budget-minutes", "0.2")
    assert result.code == 0, result.err
    assert "SYNTHETIC" in result.out and "from-scratch contouring" in result.out
    from segloop.store import Project

    project = Project.open(tmp_path / "project")
    assert [r.status for r in project.list_rounds()] == ["done", "done"]
    sources = {v.source for v in project.list_label_versions()}
    assert sources == {"sparse", "draft", "pseudo", "revised"}  # start, fill, prediction, corrections
    assert {v.author for v in project.list_label_versions() if v.source != "pseudo"} == {
        "simulated-annotator"
    }
    assert (project.root / "reports" / "index.html").is_file()
    assert len(project.list_case_ids()) == 8  # 2 of the 10 synthetic cases are kept out for testing


def test_demo_refuses_a_folder_that_is_no_dataset(run_cli, tmp_path):
    result = run_cli("demo", "--folder", tmp_path / "d", "--data", tmp_path)
    assert result.code == 1 and "expected imagesTr/ and labelsTr/" in result.err
