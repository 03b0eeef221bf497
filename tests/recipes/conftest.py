"""The README's recipes (section "Recipes"), each run as written on the real data in ``../shared/data``.

A recipe is a ``### N. ...`` subsection; its fenced blocks (```` ``` ```` without a language) run as
one bash script in a temporary folder, with ``../shared/data`` re-rooted and ``.venv/bin`` on the
``PATH``. A recipe's test then checks the outcome in the project it made (Dice, versions, sources).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA


def recipe_script(number: int) -> str:
    """The commands of recipe ``number`` as one bash script (``set -euo pipefail`` first)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    recipes = text.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"\n### {number}\. (.*?)(?=\n### |\Z)", recipes, flags=re.DOTALL)
    assert match, f"README has no recipe {number}"
    blocks = re.findall(r"```\n(.*?)```", match.group(1), flags=re.DOTALL)
    assert blocks, f"recipe {number} has no command block"
    return "set -euo pipefail\n" + "\n".join(blocks)


def run_recipe(number: int, folder: Path, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """Run recipe ``number`` in ``folder``; skips when the real data is absent, fails on a non-zero exit."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data {SHARED_DATA} is absent")
    script = recipe_script(number).replace("../shared/data", str(SHARED_DATA))
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout_s
    )
    output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"recipe {number} failed:\n{output}"
    return result
