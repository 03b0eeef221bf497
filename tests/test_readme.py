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
