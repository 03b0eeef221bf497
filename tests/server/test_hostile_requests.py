"""Hostile requests to a live server: every answer a one-line 4xx problem, nothing stored, memory bounded.

One uvicorn server (in a thread, as ``segloop serve`` runs it) serves a phantom project for the whole
module, with the upload limit lowered to 1 MiB; a second one serves the same project with sign-in
required. Every test compares the project's database and files before and after: a refused request
stores nothing. Each answer is checked by `assert_refused`: the expected status, problem JSON with a
one-line ``detail``, no traceback and no path of the server.
"""

from __future__ import annotations

import gzip
import logging
import socket
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("uvicorn", reason="the server extra (uvicorn) is not installed")

import httpx

from segloop.io import nifti
from segloop.loop.users import create_user
from segloop.store import JobStatus, Project
from tests.conftest import make_phantom_project, snapshot_project
from tests.e2e.conftest import LiveServer, start_server

SHAPE = (16, 16, 8)
MAX_UPLOAD = 1 << 20
#: Unsafe case ids as a URL path segment (percent-encoded where that matters), tried on every route.
BAD_IDS = ("%2e%2e", "..%2F..%2Fsegloop.db", "c0%00.nii.gz", "x" * 10_240)
#: More of them, tried on one route of each router (they share its check of case ids).
MORE_BAD_IDS = (
    "..%5C..%5Csegloop.db",
    "c%E2%80%A4%E2%80%A4",  # ONE DOT LEADER twice: looks like ".."
    "%EF%BC%8E%EF%BC%8E",  # FULLWIDTH FULL STOP twice
    "%C0%AE%C0%AE",  # overlong UTF-8 dots
    "c0%0D%0AX-Injected:%201",
    ".hidden",
    "-rf",
)
#: Every route that names a case in its path or query: method, URL template.
CASE_ROUTES = (
    ("GET", "/api/cases/{}"),
    ("GET", "/api/cases/{}/image.nii.gz"),
    ("GET", "/api/cases/{}/label.nii.gz"),
    ("GET", "/api/cases/{}/entropy.nii.gz"),
    ("GET", "/api/cases/{}/draft"),
    ("DELETE", "/api/cases/{}/draft"),
    ("GET", "/api/cases/{}/contours?class_name=liver&index=0"),
    ("PUT", "/api/cases/{}/label"),
    ("PUT", "/api/cases/{}/draft"),
    ("POST", "/api/cases/{}/approve"),
    ("POST", "/api/cases/{}/tools/grow/preview"),
    ("POST", "/api/cases/{}/tools/grow"),
    ("GET", "/edit/{}"),
    ("GET", "/datastore/image?image={}"),
    ("GET", "/datastore/image/info?image={}"),
    ("GET", "/datastore/label?label={}&tag=final"),
    ("GET", "/datastore/label/info?label={}&tag=final"),
    ("PUT", "/datastore/label?image={}"),
    ("POST", "/infer/segloop?image={}"),
)


@dataclass
class Served:
    """The module's servers and what a test needs to talk to them."""

    project: Project
    open: LiveServer  # loopback, no sign-in, uploads up to MAX_UPLOAD
    signed: LiveServer  # sign-in required
    tokens: dict[str, str]
    label: bytes  # a valid upload: a label of c0 (all background)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("hostile")
    project = make_phantom_project(folder, 2, SHAPE, labeled=(0,), source="pseudo")
    tokens = {name: create_user(project, name)[1] for name in ("ana", "ben", "gone")}
    project.remove_user("gone")  # an expired token: its user was removed
    label = nifti.encode(nifti.Volume(np.zeros(SHAPE, np.uint8), project.get_case("c0").affine))
    servers = [
        start_server(project, max_upload_bytes=MAX_UPLOAD),
        start_server(project, require_sign_in=True, max_upload_bytes=MAX_UPLOAD),
    ]
    try:
        yield Served(project, *servers, tokens, label)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def http(served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.open.url, timeout=30) as client:
        yield client


def stored_state(project: Project) -> tuple:
    """Rows and files of the project (database journal files aside)."""
    files = sorted(
        str(path.relative_to(project.root))
        for path in project.root.rglob("*")
        if path.is_file() and not path.name.startswith("segloop.db")
    )
    return snapshot_project(project.root), files


#: Tests that store on purpose (a running job to follow, a draft to protect), then undo it.
STORING_TESTS = {
    "test_a_user_never_reads_or_discards_another_user_s_draft",
    "test_many_event_streams_dropped_at_once",
}


class _Errors(logging.Handler):
    """Records of the servers' error log (uvicorn logs an exception a route raised there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def nothing_stored(served, request) -> Iterator[None]:
    """A test of this module sends only requests that must be refused: the project stays as it was,
    and the server logs no exception (a traceback the client never saw, as after a dropped stream)."""
    before = stored_state(served.project)
    errors = _Errors()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        yield
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
    assert [record.getMessage() for record in errors.records] == []
    if request.function.__name__ not in STORING_TESTS:
        assert stored_state(served.project) == before


def assert_refused(response: httpx.Response, statuses: set[int], project: Project, probe: str = "") -> dict:
    """A problem JSON of one of ``statuses`` with a one-line detail, no traceback and no server path."""
    where = f"{probe}: {response.request.method} {str(response.request.url)[:120]}"
    assert response.status_code in statuses, (where, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json"), (
        where,
        response.text[:200],
    )
    body = response.json()
    assert body["status"] == response.status_code and isinstance(body["detail"], str), where
    assert "\n" not in body["detail"] and "Traceback" not in response.text, where
    for path in {str(project.root), str(project.root.resolve()), str(Path(__file__).parents[2])}:
        assert path not in response.text, (where, "a path of the server in the answer", body["detail"])
    return body


def _send(http: httpx.Client, method: str, url: str, served: Served) -> httpx.Response:
    """A request of ``method`` with the body its route takes (a valid label, an empty form or JSON)."""
    headers = {"If-Match": '"1"'}
    if method == "PUT" and url.startswith("/api/"):
        return http.put(url, content=served.label, headers={**headers, "Content-Type": "application/gzip"})
    if method == "PUT":
        return http.put(url, files={"label": ("l.nii.gz", served.label)}, data={"params": "{}"})
    if "/tools/" in url or url.startswith("/infer/"):
        return http.post(url, data={"params": "{}"}, headers=headers)
    return http.request(method, url, headers=headers)


# -- names from the URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template"), CASE_ROUTES, ids=lambda value: value.split("?")[0])
def test_an_unsafe_case_id_is_refused_by_every_route(served, http, method, template):
    for case_id in BAD_IDS:
        response = _send(http, method, template.format(case_id), served)
        assert_refused(response, {404, 422}, served.project, case_id[:24])


@pytest.mark.parametrize("case_id", MORE_BAD_IDS, ids=lambda case_id: case_id[:24])
def test_look_alike_and_control_character_case_ids_are_refused(served, http, case_id):
    for method, template in [CASE_ROUTES[0], CASE_ROUTES[7], CASE_ROUTES[12], CASE_ROUTES[13]]:
        response = _send(http, method, template.format(case_id), served)
        assert_refused(response, {404, 422}, served.project, case_id[:24])


@pytest.mark.parametrize(
    "path",
    [
        "..%2Fapp.py",
        "%2e%2e/%2e%2e/routes/pages.py",
        "..%5C..%5Capp.py",
        "js/%2e%2e/%2e%2e/settings.py",
        "node_modules/@niivue/niivue/package.json",
        ".git/config",
        "%2Fetc%2Fpasswd.txt",
        "index.html%00.js",  # a NUL byte: was a 500 (ValueError from the path's resolution)
        "x" * 10_240 + ".js",  # longer than a file name may be: was a 500 (OSError)
        "js%E2%88%95..%E2%88%95app.py",  # DIVISION SLASH looks like "/"
    ],
    ids=lambda path: path[:30],
)
def test_a_static_path_never_leaves_the_static_folder(served, http, path):
    assert_refused(http.get(f"/static/{path}"), {404, 422}, served.project, path[:30])


def test_a_report_file_name_never_leaves_the_report_folder(served, http):
    for name in (
        "..%2Fsegloop.db",
        "%2e%2e%2fsegloop.db",
        "..%5Csegloop.db",
        "index.html%00.png",
        "x" * 10_240,
    ):
        assert_refused(http.get(f"/api/report/{name}.png"), {404, 422}, served.project, name[:30])
    for name in ("a%2F..%2F..%2Fx.png", "...png", "nope.png"):
        assert_refused(http.get(f"/api/report/{name}"), {404, 422}, served.project, name[:30])


@pytest.mark.parametrize("name", ["%2e%2e", "%2e%2e%2fgrow", "grow%00", "x" * 10_240])
def test_unsafe_tool_model_strategy_and_trainer_names_are_refused(served, http, name):
    for response in (
        http.post(f"/api/cases/c0/tools/{name}/preview", data={"params": "{}"}),
        http.post(f"/infer/{name}?image=c0", data={"params": "{}"}),
        http.post(f"/activelearning/{name}", json={}),
        http.post(f"/train/{name}", json={}),
        http.get(f"/api/next?strategy={name}"),
        http.get(f"/datastore/label?label=c0&tag={name}"),
        http.get(f"/datastore/?output={name}"),
    ):
        assert_refused(response, {404, 422}, served.project, name[:20])


# -- numbers and headers ----------------------------------------------------------------------------


def test_out_of_range_numbers_are_refused(served, http):
    queries = ("index=-1", "index=99999999999999999999999", "index=1e308", "index=nan", "axis=7&index=0")
    queries += ("tolerance=-1&index=0", "tolerance=inf&index=0", "version=-5&index=0")
    for query in (*queries, "version=99999999999999999999&index=0"):
        response = http.get(f"/api/cases/c0/contours?class_name=liver&{query}")
        assert_refused(response, {404, 422}, served.project, query)
    for job_id in ("-1", "99999999999999999999999", "1e9", "%00"):
        for method, url in [("GET", ""), ("GET", "/events"), ("DELETE", ""), ("POST", "/resume")]:
            response = http.request(method, f"/api/jobs/{job_id}{url}")
            assert_refused(response, {404, 422}, served.project, job_id)


@pytest.mark.parametrize(
    ("if_match", "status"),
    [
        ("garbage", 422),
        ('"-1"', 422),
        ('"99999999999999999999999999"', 422),
        ("*", 422),
        ('"1", "2"', 422),
        ('W/"abc"', 422),
        ('"999999999999999999"', 422),  # no version at all
        ('"1"', 422),  # a version of another case (c0's)
        ("", 428),
    ],
)
def test_an_if_match_that_names_no_version_of_the_case_is_refused(served, http, if_match, status):
    # a draft or an approval may say 404 (no such version; c1 has none to approve) where a save says 422
    either = {status, 404} if status == 422 else {status}
    headers = {"Content-Type": "application/gzip", "If-Match": if_match}
    saved = http.put("/api/cases/c1/label", content=served.label, headers=headers)
    assert_refused(saved, {status}, served.project, if_match)
    drafted = http.put("/api/cases/c1/draft", content=served.label, headers=headers)
    assert_refused(drafted, either, served.project, if_match)
    approved = http.post("/api/cases/c1/approve", headers={"If-Match": if_match})
    assert_refused(approved, either, served.project, if_match)


# -- bodies -----------------------------------------------------------------------------------------


def _parts(count: int, *, files: bool) -> bytes:
    filename = '; filename="f"' if files else ""
    part = f'--b\r\nContent-Disposition: form-data; name="seeds"{filename}\r\n\r\nx\r\n'.encode()
    return part * count + b"--b--\r\n"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary
        ("multipart/form-data; boundary=b", b"garbage"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n{}',
        ),
        ("multipart/form-data; boundary=" + "a" * 5000, b"--x"),
        ("multipart/form-data; boundary=b", _parts(10_000, files=False)),
        ("multipart/form-data; boundary=b", _parts(10_000, files=True)),
        ("application/json", b"{}"),
        ("application/x-www-form-urlencoded", b"params=%ZZ"),
    ],
    ids=[
        "no boundary",
        "garbage",
        "truncated",
        "5000-char boundary",
        "10k fields",
        "10k files",
        "json",
        "form",
    ],
)
def test_a_malformed_multipart_body_is_refused(served, http, content_type, body):
    for url in ("/api/cases/c0/tools/grow/preview", "/api/cases/c0/tools/grow", "/datastore/label?image=c0"):
        started = time.monotonic()
        response = http.request(
            "PUT" if url.startswith("/datastore") else "POST",
            url,
            content=body,
            headers={"Content-Type": content_type, "If-Match": '"1"'},
        )
        assert_refused(response, {400, 413, 422}, served.project, url)
        assert time.monotonic() - started < 5


def _chunks(megabytes: int) -> Iterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="seeds"; filename="s.nii.gz"\r\n\r\n'
    for _ in range(megabytes):
        yield b"\0" * (1 << 20)
    yield b"\r\n--b--\r\n"


def test_a_body_over_the_limit_is_413_declared_or_streamed(served, http):
    multipart = {"Content-Type": "multipart/form-data; boundary=b", "If-Match": '"1"'}
    streamed = http.post("/api/cases/c0/tools/grow/preview", content=_chunks(64), headers=multipart)
    assert_refused(streamed, {413}, served.project, "64 MiB streamed")
    raw_label = {"Content-Type": "application/gzip", "If-Match": '"1"'}
    assert_refused(
        http.put("/api/cases/c0/label", content=_chunks(64), headers=raw_label), {413}, served.project
    )
    declared = http.put("/api/cases/c0/draft", content=b"\0" * (MAX_UPLOAD + 1), headers=raw_label)
    assert_refused(declared, {413}, served.project, "declared")


def _header_only(shape: tuple[int, ...], dtype=np.uint8, data: int = 1 << 16) -> bytes:
    """gzip of a NIfTI header declaring ``shape`` and ``data`` zero bytes after it."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    return gzip.compress(header.binaryblock + b"\0" * (4 + data))


def _bombs() -> dict[str, tuple[bytes, set[int]]]:
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip of 64 MiB of zeros: 64 KB
    bomb = b"".join(zeros.compress(b"\0" * (1 << 24)) for _ in range(4)) + zeros.flush()
    return {
        "2^40 voxels": (_header_only((1 << 14, 1 << 14, 1 << 12)), {413}),
        "32767^3 float64": (_header_only((32767, 32767, 32767), np.float64), {413}),
        "5D 16x16x8x1000x1000": (_header_only((*SHAPE, 1000, 1000)), {413, 422}),
        "header without voxels": (_header_only(SHAPE, data=0), {422}),
        "64 MiB of zeros": (bomb, {413, 422}),
        "gzip of gzip": (gzip.compress(gzip.compress(b"\0" * (8 << 20))), {422}),
        "truncated": (nifti.encode(nifti.Volume(np.ones(SHAPE, np.uint8), np.eye(4)))[:60], {422}),
    }


def _rss_mib() -> float:
    """Resident memory of this process, where the server threads run (MiB)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_bombs_and_lying_headers_are_refused_without_inflating(served, http):
    before = _rss_mib()
    for name, (body, statuses) in _bombs().items():
        for response in (
            http.put("/api/cases/c0/label", content=body, headers={"If-Match": '"1"'}),
            http.put("/api/cases/c0/draft", content=body, headers={"If-Match": '"1"'}),
            http.post("/api/cases/c0/tools/grow/preview", files={"seeds": ("s.nii.gz", body)}),
            http.put("/datastore/label?image=c0", files={"label": ("l.nii.gz", body)}),
        ):
            assert_refused(response, statuses | {422}, served.project, name)
    nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1000000 1000000 1000000\nencoding: gzip\n\n"
    response = http.put(
        "/datastore/label?image=c0", files={"label": ("l.nrrd", nrrd + zlib.compress(b"\0" * 99))}
    )
    assert_refused(response, {413}, served.project, "NRRD of 10^18 voxels")
    for data_file in ("/etc/passwd", "../../segloop.db", "LIST\n/etc/passwd"):
        detached = (
            f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 16 16 8\nencoding: raw\ndata file: {data_file}\n\n"
        )
        response = http.put("/datastore/label?image=c0", files={"label": ("l.seg.nrrd", detached.encode())})
        assert_refused(response, {422}, served.project, data_file)
    assert _rss_mib() - before < 150  # nothing was inflated to its declared size


def test_a_job_request_of_the_wrong_shape_is_refused(served, http):
    bodies = (
        "[]",
        "null",
        '"x"',
        "1",
        '{"kind": 5}',
        '{"kind": "train", "params": []}',
        '{"kind": "../../x"}',
    )
    bodies += (
        '{"kind": "predict", "params": {"cases": ["../x"]}}',
        '{"kind": "predict", "params": {"cases": "c0"}}',
    )
    for body in (*bodies, '{"kind": "predict", "params": {"model": -1}}', "{" * 10_000):
        response = http.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
        assert_refused(response, {400, 404, 422}, served.project, body[:30])


def test_json_fields_of_the_wrong_shape_are_refused(served, http):
    approve = {"Content-Type": "application/json", "If-Match": '"1"'}
    for body in ["[]", '{"classes": "liver"}', '{"classes": [1, 2]}', '{"classes": ["nope"]}']:
        response = http.post("/api/cases/c0/approve", content=body, headers=approve)
        assert_refused(response, {400, 404, 422}, served.project, body)
    for params in ["[]", "{", '{"client_id": "../../x"}', '{"client_id": 5}', '{"label_info": "x"}']:
        response = http.put(
            "/datastore/label?image=c0", files={"label": ("l.nii.gz", served.label)}, data={"params": params}
        )
        assert_refused(response, {400, 422}, served.project, params)
    for body in ["[]", '{"seed": "x"}', '{"client_id": "../../x"}', '{"client_id": ["a"]}']:
        response = http.post(
            "/activelearning/random", content=body, headers={"Content-Type": "application/json"}
        )
        assert_refused(response, {400, 422}, served.project, body)
    for params in [
        "[]",
        "{",
        '{"seeds": [[1, 2]]}',
        '{"class_name": 5}',
        '{"seeds": [[99999, 99999, 99999]]}',
    ]:
        response = http.post("/api/cases/c0/tools/threshold/preview", data={"params": params})
        assert_refused(response, {400, 404, 422}, served.project, params)
    for body in ["[]", '{"segloop": 5}']:
        response = http.post("/train/", content=body, headers={"Content-Type": "application/json"})
        assert_refused(response, {400, 422}, served.project, body)


def test_json_nested_deeper_than_the_stack_is_refused(served, http):
    deep = "[" * 100_000 + "]" * 100_000  # json.loads raised RecursionError: was a 500
    for response in (
        http.post("/api/cases/c0/tools/threshold/preview", data={"params": deep}),
        http.post("/api/cases/c0/tools/threshold", data={"params": deep}, headers={"If-Match": '"1"'}),
        http.post("/infer/segloop?image=c0", data={"params": deep}),
        http.put(
            "/datastore/label?image=c0", files={"label": ("l.nii.gz", served.label)}, data={"params": deep}
        ),
        http.post("/api/jobs", content='{"kind": "predict", "params": {"a": ' + deep + "}}"),
        http.post("/activelearning/random", content=deep, headers={"Content-Type": "application/json"}),
    ):
        assert_refused(response, {400, 404, 422}, served.project, "deep JSON")


# -- who is asking ----------------------------------------------------------------------------------


def test_tokens_that_are_no_user_s_are_refused_when_sign_in_is_required(served):
    bad = {
        "none": {},
        "not a token": {"Authorization": "Bearer not-a-token"},
        "basic": {"Authorization": "Basic YW5hOmFuYQ=="},
        "10 KB": {"Authorization": "Bearer " + "x" * 10_240},
        "removed user": {"Authorization": f"Bearer {served.tokens['gone']}"},
        "two tokens": {"Authorization": f"Bearer {served.tokens['ana']} {served.tokens['ben']}"},
    }
    with httpx.Client(base_url=served.signed.url, timeout=30) as http:
        for name, headers in bad.items():
            for method, url in [("GET", "/api/cases/c0/label.nii.gz"), ("GET", "/api/jobs/1/events")]:
                assert_refused(http.request(method, url, headers=headers), {401}, served.project, name)
            response = http.put(
                "/api/cases/c0/draft", content=served.label, headers={**headers, "If-Match": '"1"'}
            )
            assert_refused(response, {401}, served.project, name)
            assert_refused(
                http.get("/datastore/image?image=c0", headers=headers), {401}, served.project, name
            )


def test_a_user_never_reads_or_discards_another_user_s_draft(served):
    ana, ben = ({"Authorization": f"Bearer {served.tokens[name]}"} for name in ("ana", "ben"))
    with httpx.Client(base_url=served.signed.url, timeout=30) as http:
        stored = http.put(
            "/api/cases/c1/draft", content=_c1_label(served), headers={**ben, "If-Match": '"none"'}
        )
        assert stored.status_code == 201, stored.text
        try:
            assert_refused(http.get("/api/cases/c1/draft", headers=ana), {404}, served.project, "read")
            assert_refused(http.delete("/api/cases/c1/draft", headers=ana), {404}, served.project, "discard")
            assert http.get("/api/cases/c1", headers=ana).json()["draft"] is None
            assert http.get("/api/cases/c1/draft", headers=ben).status_code == 200
        finally:
            assert http.delete("/api/cases/c1/draft", headers=ben).status_code == 204


def _c1_label(served: Served) -> bytes:
    return nifti.encode(nifti.Volume(np.zeros(SHAPE, np.uint8), served.project.get_case("c1").affine))


# -- server-sent events -----------------------------------------------------------------------------


def test_many_event_streams_dropped_at_once(served, http):
    job = served.project.start_job("predict", author="tester", params={})  # running, owned by this process
    port = int(served.open.url.rsplit(":", 1)[1])
    streams = []
    try:
        for _ in range(24):
            stream = socket.create_connection(("127.0.0.1", port), timeout=10)
            stream.sendall(
                f"GET /api/jobs/{job.id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            )
            streams.append(stream)
        for stream in streams:  # each got its first event
            assert b"data: {" in _read_until(stream, b"\n\n")
    finally:
        for stream in streams:
            stream.close()
        served.project.finish_job(job.id, status=JobStatus.CANCELLED, error="test")
    started = time.monotonic()
    assert http.get("/api/project").status_code == 200
    assert time.monotonic() - started < 2
    ended = http.get(f"/api/jobs/{job.id}/events", timeout=5)  # a finished job: one event, then the end
    assert ended.status_code == 200 and ended.text.count("data: ") == 1


def _read_until(stream: socket.socket, marker: bytes) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received or marker not in received.partition(b"\r\n\r\n")[2]:
        chunk = stream.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_a_body_cut_short_by_the_client_stores_nothing(served, http):
    port = int(served.open.url.rsplit(":", 1)[1])
    part = b'--b\r\nContent-Disposition: form-data; name="label"; filename="l.nii.gz"\r\n\r\n'
    for path, content_type, body in [
        ("/api/cases/c0/label", "application/gzip", served.label),
        ("/datastore/label?image=c0", "multipart/form-data; boundary=b", part + served.label),
    ]:
        head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        head += f'If-Match: "1"\r\nContent-Length: {len(body) + 500}\r\n\r\n'  # 500 bytes never come
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stream:
            stream.sendall(head.encode() + body)
            stream.shutdown(socket.SHUT_WR)
            assert b" 500 " not in stream.recv(4096)[:16]
    assert http.get("/api/project").status_code == 200
