"""The README's usage commands, run as written (real data paths re-rooted, in a temporary folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA


def _usage_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    usage = text.split("## Use", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.*?)```", usage, flags=re.DOTALL)


@pytest.mark.slow
def test_readme_usage_commands_run(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data {SHARED_DATA} is absent")
    script = "set -euo pipefail\n" + "\n".join(_usage_blocks())
    script = script.replace("../shared/data", str(SHARED_DATA))
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out.seg.nrrd").is_file()
    assert (tmp_path / "ts" / "segloop.toml").is_file()


def _python_api_block() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return block


def test_readme_python_api_example_runs_as_written(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _python_api_block()], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "2 draft fill-between-slices"
    assert lines[1] == "3 revised 1"
    assert lines[2].startswith("refused: case 'p' changed") and "nothing was stored" in lines[2]
    assert "interpolate" in lines[3]


def _browser_block_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Correct in the browser", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```\n(.*?)```", section, flags=re.DOTALL)
    return [line.split("#", 1)[0].split() for line in block.splitlines() if line.strip()]


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _serve(arguments: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """Start a README ``segloop serve`` line on a free port; its URL, reachable on loopback."""
    segloop = str(Path(sys.executable).parent / "segloop")
    process = subprocess.Popen(
        [segloop, *arguments[1:], "--port", "0"], cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()
    assert line.startswith("serving "), line
    port = line.split(" at ")[1].split()[0].rsplit(":", 1)[1]
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen) -> int:
    import signal

    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_readme_serve_commands_run_as_written(tmp_path):
    """The browser section's commands: serve on loopback, add a user, serve off loopback with sign-in."""
    pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")
    from tests.conftest import make_phantom_project

    make_phantom_project(tmp_path, 1, (16, 16, 8), name="myproj")
    commands = _browser_block_commands()
    assert [c[:2] for c in commands] == [["segloop", "serve"], ["segloop", "user"], ["segloop", "serve"]]
    process, url = _serve(commands[0], tmp_path)
    status, body = _get(f"{url}/api/cases")
    assert (status, [c["id"] for c in body["cases"]]) == (200, ["c0"])
    assert _stop(process) == 0

    added = subprocess.run(
        [str(Path(sys.executable).parent / "segloop"), *commands[1][1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = next(word for word in added.stdout.split() if len(word) >= 40)
    process, url = _serve(commands[2], tmp_path)
    try:
        assert _get(f"{url}/api/project")[0] == 401
        status, body = _get(f"{url}/api/project", token)
        assert (status, body["author"]) == (200, "ana")
    finally:
        assert _stop(process) == 0


#: The database URL the README's "Scaling out" block names; the test gives it a fresh test database.
README_POSTGRES_URL = "postgresql+psycopg://segloop@localhost/big"


def _section_block(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```\n(.*?)```", section, flags=re.DOTALL)
    return block


@pytest.mark.slow
def test_readme_scaling_out_commands_run_as_written(tmp_path, postgres_url):
    """Distributed training, Dask prediction run twice (the second predicts nothing), migrate, status."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data {SHARED_DATA} is absent")
    pytest.importorskip("distributed", reason="the scale extra (dask distributed) is not installed")
    block = _section_block("Scaling out")
    assert README_POSTGRES_URL in block
    script = "set -euo pipefail\n" + block.replace("../shared/data", str(SHARED_DATA))
    script = script.replace(README_POSTGRES_URL, postgres_url)
    bin_dir = Path(sys.executable).parent
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # migrate's trust entry stays in the test
    }
    environment.pop("SEGLOOP_DATABASE_URL", None)
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from segloop.store import Project

    project = Project.open(tmp_path / "big", database_url=postgres_url)
    [model] = project.list_models()
    assert model.metrics["processes"] == 2
    predicted = [p.case_id for p in project.list_predictions()]
    assert sorted(predicted) == sorted(c for c in project.list_case_ids() if c.startswith("openkbp_pt_2"))
    assert len(predicted) == 6  # the second run predicted nothing again
    assert "pseudo" in result.stdout
