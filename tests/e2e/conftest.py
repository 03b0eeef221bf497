"""Fixtures of the browser tests: segloop served on loopback, driven by Debian's chromium (Playwright).

The whole folder is skipped, saying why, when Debian's chromium, the ``playwright`` package, the server
extra or the pinned NiiVue bundle (``npm ci`` in ``src/segloop/server/static``) is missing. Playwright
never downloads a browser here (never run ``playwright install``): it drives ``/usr/bin/chromium``.

Fixtures:
    serve: a factory ``serve(project=None, *, count=1, shape=(64, 64, 64), labeled=(0,), source="pseudo",
        **settings)`` that serves a project (a new phantom project when none is given, its labels stored
        as ``source``) with uvicorn in a thread on a free loopback port; every server it started is
        stopped in teardown.
    live_server: ``serve()`` — one 64³ phantom ``c0`` whose true label is stored as a ``pseudo`` version
        (a prediction to correct: what a person saves as ``revised`` then decides the effective label).
    browser: the session's chromium.
    console: the console errors of every page of the test; teardown fails the test on any not allowed.
    make_page: a factory of pages, each in its own browser context (own storage: another person).
    page: one page.

Helpers (import them from ``tests.e2e.conftest``): `open_editor`, `editor_status`, `drag_on_slice`.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REPO_ROOT, make_phantom_project

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from segloop.store import Project

CHROMIUM = Path("/usr/bin/chromium")
NIIVUE_BUNDLE = REPO_ROOT / "src/segloop/server/static/node_modules/@niivue/niivue/dist/index.js"
#: Software WebGL2 (SwiftShader through ANGLE), no network of its own, no sandbox (containers).
CHROMIUM_ARGS = (
    "--enable-unsafe-swiftshader",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--use-gl=angle",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: How long a page may take to show a case (SwiftShader on 2 shared cores is slow).
READY_TIMEOUT_MS = 30_000


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent: install Debian's chromium (make setup does)"
    for module in ("playwright", "fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            return f"the python package {module} is absent: install segloop's test extra"
    if not NIIVUE_BUNDLE.exists():
        return f"the NiiVue bundle {NIIVUE_BUNDLE} is absent: run npm ci in src/segloop/server/static"
    return None


_REASON = _missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test of this folder, saying why, when the browser cannot run here."""
    if _REASON is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.skip(reason=_REASON))


# ---------------------------------------------------------------------------------------------------
# the server


@dataclass
class LiveServer:
    """A project served on loopback.

    Attributes:
        url: the base URL, ``http://127.0.0.1:<port>`` (no trailing slash).
        project: the served project (read stored versions from it to check what a page saved).
        app: the FastAPI application.
    """

    url: str
    project: Project
    app: Any
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def edit_url(self, case_id: str) -> str:
        """The editor page of one case."""
        return f"{self.url}/edit/{case_id}"

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=15)


def start_server(project: Project, **settings: Any) -> LiveServer:
    """Serve ``project`` with uvicorn in a daemon thread on a free loopback port.

    Args:
        project: the project.
        **settings: fields of `segloop.server.Settings` (host stays 127.0.0.1).

    Returns:
        The running server (call `LiveServer.stop`).
    """
    import uvicorn

    from segloop.server import Settings, create_app

    app = create_app(project, Settings(**settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as `segloop serve`: no 40 ms per answer
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", project, app, server, thread)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """A factory of served projects (see the module docstring)."""
    started: list[LiveServer] = []

    def make(
        project: Project | None = None,
        *,
        count: int = 1,
        shape: tuple[int, int, int] = (64, 64, 64),
        labeled: tuple[int, ...] = (0,),
        source: str = "pseudo",
        **settings: Any,
    ) -> LiveServer:
        if project is None:
            project = make_phantom_project(tmp_path, count, shape, labeled=labeled, source=source)
        server = start_server(project, **settings)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def live_server(serve) -> LiveServer:
    """One 64³ CT phantom ``c0`` with its true label stored as a ``pseudo`` version."""
    return serve()


# ---------------------------------------------------------------------------------------------------
# the browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, with software WebGL2."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        yield chromium
        chromium.close()


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of a test's pages.

    Attributes:
        errors: ``"<page> <kind>: <text>"`` for every error seen.
        allowed: patterns of errors the test expects (e.g. the 409 a conflicting save answers).
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect errors matching ``pattern`` (a regular expression searched in the message)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        """The errors no pattern allows (a missing favicon is always allowed)."""
        return [
            error
            for error in self.errors
            if "favicon" not in error and not any(p.search(error) for p in self.allowed)
        ]


@pytest.fixture
def console() -> Iterator[ConsoleLog]:
    """The test's console log; the test fails in teardown on an error it did not allow."""
    log = ConsoleLog()
    yield log
    unexpected = log.unexpected()
    if unexpected:
        pytest.fail("browser console errors:\n" + "\n".join(unexpected), pytrace=False)


@pytest.fixture
def make_page(browser, console: ConsoleLog) -> Iterator[Callable[..., Page]]:
    """A factory ``make_page(**context_options)``: a page in a new browser context (its own storage)."""
    contexts = []

    def make(**options: Any) -> Page:
        options.setdefault("viewport", {"width": 1280, "height": 860})
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(READY_TIMEOUT_MS)
        name = f"page{len(contexts)}"

        def on_console(message) -> None:
            if message.type == "error":
                location = message.location.get("url", "") if message.location else ""
                console.errors.append(f"{name} console: {message.text} {location}".strip())

        page.on("console", on_console)
        page.on("pageerror", lambda error: console.errors.append(f"{name} pageerror: {error}"))
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(make_page) -> Page:
    """A page in a fresh browser context."""
    return make_page()


# ---------------------------------------------------------------------------------------------------
# helpers of the editor's tests


def editor_status(page: Page) -> dict[str, Any]:
    """The editor's ``window.__status`` (``{}`` before the script set it)."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__status || {}))")


def wait_until(page: Page, predicate_js: str, timeout_ms: int = READY_TIMEOUT_MS) -> None:
    """Wait until ``predicate_js`` (a JS expression over ``window.__status`` as ``s``) holds.

    Raises:
        AssertionError: when the editor reported an error first (its ``lastError``).
    """
    page.wait_for_function(
        f"() => {{ const s = window.__status || {{}}; return s.lastError || ({predicate_js}); }}",
        timeout=timeout_ms,
    )
    status = editor_status(page)
    assert not status.get("lastError"), f"the editor reported: {status['lastError']}"


def open_editor(page: Page, server: LiveServer, case_id: str = "c0") -> dict[str, Any]:
    """Open the editor on a case and wait until the case is shown and editable.

    Returns:
        ``window.__status`` once ready.
    """
    page.goto(server.edit_url(case_id))
    wait_until(page, "s.ready === true")
    return editor_status(page)


def slice_point(page: Page, fx: float, fy: float) -> tuple[float, float]:
    """Page coordinates (CSS pixels) of a point on the shown axial slice, in fractions of its extent."""
    return page.evaluate("([fx, fy]) => window.__editor.pagePoint(fx, fy)", [fx, fy])


def drag_on_slice(page: Page, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Press the left button at the first point, move through the others, release.

    Args:
        page: the editor's page.
        points: ``(fx, fy)`` fractions of the shown slice (0..1 across each in-plane axis).
        steps: mouse-move events between two points (each re-renders in SwiftShader: keep it small).
    """
    xy = [slice_point(page, fx, fy) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()
