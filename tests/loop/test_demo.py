"""`segloop demo` (what `make demo` runs), with a tiny training budget."""

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_demo_trains_and_predicts_the_unlabelled_synthetic_cases(run_cli, tmp_path):
    result = run_cli("demo", "--folder", tmp_path, "--minutes", "0.1")
    assert result.code == 0, result.err
    assert "SYNTHETIC" in result.out and "pseudo labels" in result.out
    from segloop.store import Project

    project = Project.open(tmp_path / "project")
    sources = {v.case_id: v.source for v in project.list_label_versions()}
    assert sorted(sources.values()) == ["original"] * 2 + ["pseudo"] * 4
    assert (tmp_path / "synth_000.seg.nrrd").is_file()
