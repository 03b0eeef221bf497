"""`segloop predict --executor dask`: a killed client's re-run finishes the rest, each case once;
dask is imported only when asked for, and its absence is one line naming the ``scale`` extra."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from segloop.store import Project, check_project
from tests.loop.conftest import phantom_project, tiny_config

REPO = Path(__file__).resolve().parents[2]


def run_cli_slowly() -> None:
    """``segloop ARGS`` (``python -c`` entry of the killed-client test) with each task 1 s longer."""
    from segloop.cli.main import main
    from segloop.loop import predict
    from tests.loop.test_batch_predict import slow_predict_case

    predict.predict_case = slow_predict_case
    sys.argv = ["segloop", *sys.argv[1:]]
    main()


def test_dask_is_imported_only_for_the_dask_executor():
    code = (
        "import sys, segloop.loop, segloop.loop.predict, segloop.loop.training, segloop.cli.main;"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert found.stdout.strip() == "[]"


def test_without_dask_the_dask_executor_is_one_line_naming_the_scale_extra(run_cli, tmp_path, monkeypatch):
    project = phantom_project(tmp_path, n_cases=2, n_labeled=1)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    result = run_cli("predict", project.root, "--executor", "dask")
    assert result.code == 1 and result.err.count("\n") == 1
    assert (
        'the dask executor needs the scale extra (distributed is missing): pip install "segloop[scale]"'
        in result.err
    )
    refused = run_cli("predict", project.root, "--workers", "2")
    assert refused.code == 1 and "scheduler and workers are options of the dask executor" in refused.err
    assert "(--executor dask)" in refused.err
    assert project.list_jobs() == []


@pytest.mark.slow  # a training, a CLI process with a LocalCluster killed, a re-run (~25 s on 2 cores)
def test_a_killed_client_is_finished_by_a_rerun_with_every_case_predicted_once(run_cli, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("distributed")
    from segloop.loop.training import train_project

    project = phantom_project(tmp_path, n_cases=8, n_labeled=2)
    train_project(project, tiny_config(), author="t", device="cpu")
    started = tmp_path / "started"
    started.mkdir()
    args = ["predict", str(project.root), "--unlabeled", "--device", "cpu"]
    slowly = f"from {__name__} import run_cli_slowly; run_cli_slowly()"
    client = subprocess.Popen(
        [sys.executable, "-c", slowly, *args, "--executor", "dask", "--workers", "1", "--commit-every", "1"],
        cwd=REPO,
        env={**os.environ, "SEGLOOP_TEST_STARTED_DIR": str(started)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its LocalCluster's worker dies with it, as on a crashed machine
    )
    deadline = time.monotonic() + 120
    while not project.list_predictions() and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(client.pid, signal.SIGKILL)  # after its first batch, its worker inside the next task's wait
    output = client.communicate()[0].decode(errors="replace")
    committed = len(project.list_predictions())
    assert 0 < committed < 6, output

    rerun = run_cli(*args)  # the same on the local executor: one idempotency for both
    assert rerun.code == 0, rerun.err
    assert f"model 1 predicted {6 - committed} cases, skipped {committed} done before" in rerun.out
    unlabeled = [f"c{i}" for i in range(2, 8)]
    reopened = Project.open(project.root)
    assert Counter(p.case_id for p in reopened.list_predictions()) == dict.fromkeys(unlabeled, 1)
    pseudo = Counter(v.case_id for v in reopened.list_label_versions() if v.source == "pseudo")
    assert pseudo == dict.fromkeys(unlabeled, 1)
    assert [j.status for j in reopened.list_jobs(kind="predict")] == ["interrupted", "done"]
    report = check_project(reopened)
    assert report.ok, report.problems
