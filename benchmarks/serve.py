"""`segloop serve` on loopback: the editor's first slice, a save, a grow preview, the dashboard.

Measures the issue's targets against a uvicorn server started in this process (a thread, a free
loopback port) and Debian's chromium driven by Playwright (software WebGL2; never
``playwright install``):

- first slice on screen of a 512x512x128 CT phantom: from ``page.goto('/edit/<id>')`` until the
  editor sets ``window.__status.firstSlice`` (cold: a new browser profile; warm: the page again);
- save round trip: ``PUT /api/cases/<id>/label`` of a 512x512x128 label (NIfTI gz), client-side time;
- grow-from-scribbles preview on 256x256x128: ``POST /api/cases/<id>/tools/grow/preview``;
- dashboard of a 1,000-case project, which the server pages: its first page (``GET /api/cases?limit=200``,
  200 cases and the total), and the page from ``goto('/')`` until its table of that page is built
  (``window.__dashboard``).

A part whose route is missing or failing is reported as not run, with the reason. Run from the
repository root:

    .venv/bin/python benchmarks/serve.py [--repeats 3] [--json out.json] [--only first,save,grow,dashboard]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the e2e harness: start_server, chromium's path and flags

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer, start_server  # noqa: E402

from segloop.core.volume import Volume  # noqa: E402
from segloop.io import write_volume  # noqa: E402
from segloop.io.nifti import encode  # noqa: E402
from segloop.loop.cases import import_cases, init_project  # noqa: E402
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom  # noqa: E402

PARTS = ("first", "save", "grow", "dashboard")
#: (part, what, target seconds) of the issue.
TARGETS = {
    "first": ("first slice on screen, 512x512x128 CT", 1.0),
    "save": ("save round trip, 512x512x128 label", 0.5),
    "grow": ("grow preview, 256x256x128", 1.0),
    "dashboard": ("dashboard: first page (200 of 1,000 cases) + table", 0.3),
}
CT_SHAPE = (512, 512, 128)
GROW_SHAPE = (256, 256, 128)
N_DASHBOARD_CASES = 1000
#: The cases the dashboard fetches at once (``PAGE_SIZE`` of ``static/js/dashboard.js``).
DASHBOARD_PAGE = 200
PAGE_TIMEOUT_MS = 120_000


class NotRunError(Exception):
    """A part could not run here (missing route, browser, data): the message says why."""


# -- projects --------------------------------------------------------------------------------------


def editor_project(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A project of the CT phantom ``ct`` (512x512x128) and the grow phantom ``grow`` (256x256x128).

    Returns:
        The project and the phantoms' label arrays by case id (the truths the scribbles come from).
    """
    project = init_project(folder / "editor", PHANTOM_CLASSES)
    truths = {}
    images = []
    for case_id, shape in (("ct", CT_SHAPE), ("grow", GROW_SHAPE)):
        phantom = make_ct_phantom(shape, seed=1)
        images.append(write_volume(phantom.image, folder / "img" / f"{case_id}_0000.nii.gz"))
        write_volume(phantom.labels, folder / "lab" / f"{case_id}.nii.gz")
        truths[case_id] = phantom.labels.array
    import_cases(project, images, labels_dir=folder / "lab", source="pseudo")
    return project, truths


def dashboard_project(folder: Path, count: int = N_DASHBOARD_CASES) -> Any:
    """A project of ``count`` tiny (8x8x4) cases, a third with a sparse label: the dashboard's table."""
    project = init_project(folder / "dashboard", PHANTOM_CLASSES)
    phantom = make_ct_phantom((8, 8, 4), seed=0)
    image = write_volume(phantom.image, folder / "tiny.nii.gz")
    label = write_volume(phantom.labels, folder / "tiny_label.nii.gz")
    (folder / "many").mkdir()
    (folder / "many_lab").mkdir()
    images = []
    for index in range(count):
        path = folder / "many" / f"case{index:04d}_0000.nii.gz"
        path.hardlink_to(image)
        images.append(path)
        if index % 3 == 0:
            (folder / "many_lab" / f"case{index:04d}.nii.gz").hardlink_to(label)
    import_cases(project, images, labels_dir=folder / "many_lab", source="sparse")
    return project


# -- measurements -----------------------------------------------------------------------------------


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def checked(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        detail = response.text[:200].replace("\n", " ")
        raise NotRunError(f"{what} answered {response.status_code}: {detail}")
    return response


def first_slice(browser: Any, server: LiveServer, repeats: int) -> dict[str, Any]:
    """Seconds from ``goto('/edit/ct')`` to ``window.__status.firstSlice`` (cold, then warm loads)."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        times, in_page = [], []
        for _ in range(repeats):
            page.goto("about:blank")
            started = time.time()
            page.goto(server.edit_url("ct"))
            try:
                page.wait_for_function(
                    "() => (window.__status || {}).firstSlice || (window.__status || {}).lastError",
                    timeout=PAGE_TIMEOUT_MS,
                )
            except PlaywrightError as error:  # a page that never shows a slice
                raise NotRunError(
                    f"the editor showed no slice: {str(error).splitlines()[0]} {errors[:1]}"
                ) from None
            status = page.evaluate("() => ({...window.__status, origin: performance.timeOrigin})")
            if status.get("lastError"):
                raise NotRunError(f"the editor reported: {status['lastError']}")
            times.append((status["origin"] + status["firstSlice"]) / 1000 - started)
            in_page.append(status["firstSlice"] / 1000)  # from the navigation's start
        return {
            "seconds": times[0],
            "warm_seconds": min(times[1:]) if len(times) > 1 else None,
            "all": times,
            "from_navigation_start": in_page,
        }
    finally:
        context.close()


def save_round_trip(
    client: httpx.Client, project: Any, truths: dict[str, Any], repeats: int
) -> dict[str, Any]:
    """Client-side seconds of ``PUT /api/cases/ct/label`` (If-Match the head) of a 512x512x128 label."""
    info = checked(client.get("/api/cases/ct"), "GET /api/cases/ct").json()
    affine = np.asarray(info["affine"], dtype=float)
    labels = truths["ct"].astype(np.uint8)
    classes = ",".join(c.name for c in project.config.schema.classes)
    times, sizes = [], []
    for repeat in range(repeats):
        edited = labels.copy()
        edited[200 + repeat : 240, 200:240, 60:64] = 1  # a brush stroke's worth of change
        body = encode(Volume(edited, affine))
        etag = client.get("/api/cases/ct/label.nii.gz").headers.get("etag", '"none"')
        seconds, response = timed(
            lambda body=body, etag=etag: client.put(
                f"/api/cases/ct/label?classes={classes}",
                content=body,
                headers={"If-Match": etag, "Content-Type": "application/gzip"},
            )
        )
        checked(response, "PUT /api/cases/ct/label")
        times.append(seconds)
        sizes.append(len(body))
    return {"seconds": statistics.median(times), "all": times, "body_bytes": sizes[0]}


def grow_preview(client: httpx.Client, truths: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Seconds of ``POST /api/cases/grow/tools/grow/preview`` with scribbles on three slices."""
    info = checked(client.get("/api/cases/grow"), "GET /api/cases/grow").json()
    truth = truths["grow"]
    n_classes = int(truth.max())
    seeds = np.zeros(truth.shape, np.uint8)
    for k in (40, 64, 88):  # a few strokes per class and of background, as a person scribbles
        plane = truth[:, :, k]
        for value in range(n_classes + 1):
            ii, jj = np.nonzero(plane == value)
            if ii.size:
                pick = np.linspace(0, ii.size - 1, num=min(ii.size, 60)).astype(int)
                seeds[ii[pick], jj[pick], k] = value if value else n_classes + 1
    body = encode(Volume(seeds, np.asarray(info["affine"], dtype=float)))
    files = {"seeds": ("seeds.nii.gz", body, "application/gzip")}
    times = []
    voxels = None
    for _ in range(repeats):
        seconds, response = timed(
            lambda: client.post("/api/cases/grow/tools/grow/preview", data={"params": "{}"}, files=files)
        )
        checked(response, "POST /api/cases/grow/tools/grow/preview")
        times.append(seconds)
        voxels = response.headers.get("x-segloop-voxels")
    return {"seconds": statistics.median(times), "all": times, "labelled_voxels": voxels}


def dashboard(browser: Any, server: LiveServer, client: httpx.Client, repeats: int) -> dict[str, Any]:
    """The first page of `N_DASHBOARD_CASES` (``GET /api/cases``), and the page until its table is built."""
    api_times = []
    for _ in range(repeats):
        seconds, response = timed(lambda: client.get(f"/api/cases?limit={DASHBOARD_PAGE}"))
        body = checked(response, "GET /api/cases").json()
        count, total = len(body["cases"]), body["total"]
        if (count, total) != (min(DASHBOARD_PAGE, N_DASHBOARD_CASES), N_DASHBOARD_CASES):
            expected = f"{DASHBOARD_PAGE} of {N_DASHBOARD_CASES}"
            msg = f"GET /api/cases: {count} of {total} cases; expected {expected}"
            raise NotRunError(msg)
        api_times.append(seconds)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        in_page = []
        for _ in range(repeats):
            page.goto("about:blank")
            page.goto(f"{server.url}/")
            page.wait_for_function(
                "() => window.__dashboard && window.__dashboard.ready", timeout=PAGE_TIMEOUT_MS
            )
            status = page.evaluate("() => ({...window.__dashboard})")
            if status["rendered"] != count:
                raise NotRunError(f"the dashboard shows {status['rendered']} rows: expected {count}")
            in_page.append((status["fetchMs"] + status["renderMs"]) / 1000)
            page_loaded = status["loadedAt"] / 1000
    finally:
        context.close()
    return {
        "seconds": statistics.median(in_page),
        "api_seconds": statistics.median(api_times),
        "render_seconds": statistics.median(in_page) - statistics.median(api_times),
        "page_until_table_seconds": page_loaded,
        "cases": count,
        "total": total,
    }


# -- the run ----------------------------------------------------------------------------------------


def run(parts: list[str], repeats: int) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="segloop-bench-serve-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        project, truths = editor_project(folder)
        print(f"editor project (512x512x128 and 256x256x128 phantoms): {time.perf_counter() - started:.1f} s")
        servers = [start_server(project)]
        if "dashboard" in parts:
            started = time.perf_counter()
            servers.append(start_server(dashboard_project(folder)))
            print(f"dashboard project ({N_DASHBOARD_CASES} cases): {time.perf_counter() - started:.1f} s")
        try:
            with sync_playwright() as playwright, ExitStack() as stack:
                browser = None
                if {"first", "dashboard"} & set(parts):
                    if not CHROMIUM.exists():
                        raise SystemExit(f"{CHROMIUM} is absent: install Debian's chromium (make setup)")
                    browser = playwright.chromium.launch(
                        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
                    )
                    stack.callback(browser.close)
                client = stack.enter_context(httpx.Client(base_url=servers[0].url, timeout=120))
                listing = stack.enter_context(httpx.Client(base_url=servers[-1].url, timeout=120))
                measures = {
                    "first": lambda: first_slice(browser, servers[0], repeats),
                    "save": lambda: save_round_trip(client, project, truths, repeats),
                    "grow": lambda: grow_preview(client, truths, repeats),
                    "dashboard": lambda: dashboard(browser, servers[-1], listing, repeats),
                }
                results = _measure(parts, measures)
        finally:
            for server in servers:
                server.stop()
    return results


def _measure(
    parts: list[str], measures: dict[str, Callable[[], dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    results = {}
    for part in parts:
        try:
            results[part] = measures[part]()
        except (NotRunError, httpx.HTTPError) as error:
            results[part] = {"seconds": None, "not_run": str(error)}
        print(f"  {part}: {json.dumps(results[part], default=str)[:300]}", flush=True)
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'measure':<50}{'seconds':>9}{'target':>8}  verdict / note")
    for part, result in results.items():
        what, target = TARGETS[part]
        seconds = result.get("seconds")
        if seconds is None:
            print(f"{what:<50}{'-':>9}{target:>8.1f}  NOT RUN: {result['not_run']}")
            continue
        verdict = "meets" if seconds <= target else "MISSES"
        note = {
            "first": lambda r: (
                f"cold (new browser profile, new server); warm {r['warm_seconds']:.3f} s"
                if r.get("warm_seconds") is not None
                else "cold"
            ),
            "save": lambda r: f"body {r['body_bytes'] / 2**20:.1f} MiB",
            "grow": lambda r: f"{r['labelled_voxels']} voxels labelled",
            "dashboard": lambda r: (
                f"{r['cases']} of {r['total']} cases; API {r['api_seconds']:.3f} s,"
                f" page until table {r['page_until_table_seconds']:.2f} s"
            ),
        }[part](result)
        print(f"{what:<50}{seconds:>9.3f}{target:>8.1f}  {verdict}; {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    parts = [part for part in args.only.split(",") if part]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {', '.join(unknown)}: expected some of {', '.join(PARTS)}")
    results = run(parts, max(1, args.repeats))
    print_table(results)
    if args.json:
        document = {"targets_s": {p: TARGETS[p][1] for p in results}, "results": results}
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
