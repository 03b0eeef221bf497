"""``segloop serve`` (a live server in a subprocess, Ctrl-C) and ``segloop user add|list|remove``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from segloop.cli.common import current_user
from segloop.loop.cases import init_project
from segloop.loop.users import authenticate
from segloop.store import Project

pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "p", ["liver"])


def _wait_for_url(process: subprocess.Popen, deadline_s: float = 30.0) -> str:
    line = process.stdout.readline()
    assert line.startswith("serving "), line
    url = line.split(" at ")[1].split()[0]
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/project", timeout=2) as response:
                assert json.load(response)["author"] == current_user()  # anonymous on loopback
                return url
        except OSError:
            if time.monotonic() > end or process.poll() is not None:
                raise
            time.sleep(0.2)


def test_serve_answers_and_ctrl_c_stops_it_cleanly(project, tmp_path):
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "segloop.cli.main", "serve", str(project.root), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            url = _wait_for_url(process)
            assert url.startswith("http://127.0.0.1:")
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()
    assert time.monotonic() - started < 10 and out.strip().endswith("stopped")
    assert "Application shutdown complete" in (tmp_path / "stderr.txt").read_text()


def test_serving_off_loopback_without_any_user_is_refused(project, run_cli):
    result = run_cli("serve", project.root, "--host", "0.0.0.0", "--port", "0")
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert "needs a user to sign in" in result.err and "segloop user add PROJECT NAME" in result.err
    result = run_cli("serve", project.root, "--require-sign-in", "--port", "0")
    assert result.code == 1 and "with sign-in required" in result.err


def test_a_port_in_use_is_one_line(project, run_cli):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", project.root, "--port", port)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port} (the port is in use)" in result.err


def test_serve_without_the_server_extra_names_it(project, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = run_cli("serve", project.root)
    assert result.code == 1 and 'pip install "segloop[server]"' in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_user_add_prints_a_token_once_that_signs_in(project, run_cli):
    result = run_cli("user", "add", project.root, "ana")
    assert result.code == 0 and "shown only this once" in result.out
    token = result.out.strip().splitlines()[-1]
    assert authenticate(Project.open(project.root), token) == "ana"
    assert run_cli("user", "add", project.root, "ana").code == 1
    assert run_cli("user", "add", project.root, "../x").err.startswith(
        "error: user name '../x' is not allowed"
    )
    listed = run_cli("user", "list", project.root)
    assert listed.code == 0 and listed.out.startswith("ana\tadded ") and token not in listed.out
    assert run_cli("user", "remove", project.root, "ana").code == 0
    assert authenticate(Project.open(project.root), token) is None
    assert "no users" in run_cli("user", "list", project.root).out
    removed_again = run_cli("user", "remove", project.root, "ana")
    assert removed_again.code == 1 and "no user 'ana'" in removed_again.err


def test_a_user_added_on_the_command_line_lets_the_server_start_off_loopback(project, run_cli, monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: served.update(app=server.config.app))
    assert run_cli("user", "add", project.root, "ana").code == 0
    result = run_cli("serve", project.root, "--host", "0.0.0.0", "--port", "0", "--max-upload-mb", "2")
    assert result.code == 1  # the stubbed server never started
    settings = served["app"].state.settings
    assert (settings.host, settings.sign_in_required, settings.max_upload_bytes) == (
        "0.0.0.0",
        True,
        2 * 2**20,
    )
    assert result.out.startswith("serving ") and "http://0.0.0.0:" in result.out
    assert "serve behind HTTPS" in result.err
