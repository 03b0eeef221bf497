"""Routes: the pages (dashboard, editor, licences) and their static files.

Pages load without sign-in (the data API asks for it), so the browser can show the sign-in prompt.
Only files under the static folder with an allowed suffix are served, never ``node_modules`` or a hidden
name; NiiVue's pinned ESM bundle is served as ``/static/vendor/niivue.js``. Pages carry a
Content-Security-Policy without inline scripts; static files are revalidated by ETag and sent gzip when
the browser accepts it.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from isal import igzip

from segloop.core.names import path_inside, validate_case_id
from segloop.errors import NotFoundError
from segloop.server.deps import AppSettings, OpenProject
from segloop.server.problems import problem

__all__ = ["CONTENT_SECURITY_POLICY", "MEDIA_TYPES", "NIIVUE_BUNDLE", "STATIC_DIR", "router", "static_file"]

router = APIRouter(include_in_schema=False)

#: The folder of the pages, scripts, styles and licence texts.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: NiiVue's self-contained ESM bundle (installed by ``npm ci`` in `STATIC_DIR`), relative to `STATIC_DIR`.
NIIVUE_BUNDLE = ("node_modules", "@niivue", "niivue", "dist", "index.js")
#: The suffixes served from `STATIC_DIR`, with their media types.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_COMPRESSIBLE = frozenset({".html", ".js", ".css", ".txt", ".svg"})
_MIN_GZIP_BYTES = 1024

#: The policy of every page: scripts only from files of this server (no inline or eval), data only from it.
#: Images may be data:/blob: URLs (NiiVue's font atlas is one); inline styles are allowed (set by NiiVue).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' blob: data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STATIC_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_NOT_INSTALLED = "the editor's NiiVue is not installed: run make setup (npm ci in src/segloop/server/static)"
_FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#1b2130"/>'
    b'<circle cx="8" cy="8" r="4.5" fill="none" stroke="#4f8ff7" stroke-width="2"/></svg>'
)


def static_file(relative: str) -> Path:
    """The file of `STATIC_DIR` a URL path names, when it is one the server may send.

    Args:
        relative: the path after ``/static/`` (``/``-separated).

    Returns:
        The file (inside `STATIC_DIR`, symbolic links resolved).

    Raises:
        NotFoundError: a part is empty, hidden (``.``, ``..``, ``.git``) or ``node_modules``, the suffix
            is not one of `MEDIA_TYPES`, or no such file exists.
        InvalidInputError: the path resolves outside `STATIC_DIR` (a symbolic link out).
    """
    parts = relative.split("/")
    allowed = all(part and not part.startswith(".") and part != "node_modules" for part in parts)
    if not allowed or Path(parts[-1]).suffix not in MEDIA_TYPES:
        kinds = ", ".join(MEDIA_TYPES)
        msg = f"no static file {relative[:120]!r}: expected a {kinds} file of the static folder"
        raise NotFoundError(msg)
    try:  # a NUL byte (ValueError) or a name too long for the file system (OSError) names no file
        path = path_inside(STATIC_DIR, *parts)
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise NotFoundError(f"no static file {relative[:120]!r}")
    return path


@lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int, size: int, compress: bool) -> bytes:
    """The bytes of a file (gzip-compressed when asked), cached per version of the file.

    ISA-L level 3 compresses NiiVue's 3 MB bundle to 1 MB in about 40 ms (zlib level 6: 0.3 s).
    """
    data = Path(path).read_bytes()
    return igzip.compress(data, compresslevel=3, mtime=0) if compress else data


def _send(request: Request, path: Path, headers: dict[str, str]) -> Response:
    """A file as the answer: 304 when the browser's ETag is current, gzip when it accepts it."""
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    sent = {**headers, "ETag": etag, "Vary": "Accept-Encoding"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=sent)
    compress = (
        path.suffix in _COMPRESSIBLE
        and stat.st_size >= _MIN_GZIP_BYTES
        and "gzip" in request.headers.get("accept-encoding", "")
    )
    if compress:
        sent["Content-Encoding"] = "gzip"
    body = _read(str(path), stat.st_mtime_ns, stat.st_size, compress)
    return Response(body, media_type=MEDIA_TYPES[path.suffix], headers=sent)


def _page(request: Request, name: str) -> Response:
    path = STATIC_DIR / name
    if not path.is_file():
        return problem(503, f"the page {name} is not installed: expected it in segloop's static folder")
    return _send(request, path, _PAGE_HEADERS)


@router.get("/")
def dashboard(request: Request) -> Response:
    """The dashboard: classes, cases, rounds, report plots and jobs."""
    return _page(request, "index.html")


@router.get("/edit/{case_id}")
def editor(request: Request, case_id: str, project: OpenProject, settings: AppSettings) -> Response:
    """The editor of one case (422 for a malformed case id, 404 for an unknown one).

    When sign-in is required, the page (served to anyone) does not say whether the case exists:
    case ids may name patients; the page's API requests, signed in, tell the person.
    """
    validate_case_id(case_id)
    if not settings.sign_in_required:
        project.get_case(case_id)
    return _page(request, "editor.html")


@router.get("/static/vendor/niivue.js")
def niivue(request: Request) -> Response:
    """NiiVue's pinned ESM bundle (503 when ``npm ci`` has not installed it)."""
    path = STATIC_DIR.joinpath(*NIIVUE_BUNDLE)
    if not path.is_file():
        return problem(503, _NOT_INSTALLED)
    return _send(request, path, _STATIC_HEADERS)


@router.get("/static/{relative:path}")
def static(request: Request, relative: str) -> Response:
    """A script, style, page, image or licence text of the static folder (404 for anything else).

    A page (``.html``) carries the pages' policy wherever it is fetched from.
    """
    path = static_file(relative)
    return _send(request, path, _PAGE_HEADERS if path.suffix == ".html" else _STATIC_HEADERS)


@router.get("/licenses")
def licenses(request: Request) -> Response:
    """The licence texts of segloop and of the JavaScript it serves, on one page."""
    files = sorted((STATIC_DIR / "LICENSES").glob("*.txt"), key=_license_order)
    sections = "\n".join(
        _license_section(path.stem, path.name, path.read_text(encoding="utf-8")) for path in files
    )
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>segloop: licences</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/css/app.css"></head><body class="licenses">'
        '<header class="bar"><h1><a href="/">segloop</a></h1><span class="muted">licences</span></header>'
        "<main><p>segloop and the JavaScript packages its editor serves (NiiVue and what NiiVue bundles).</p>"
        f"{sections}</main></body></html>"
    )
    return Response(body, media_type=MEDIA_TYPES[".html"], headers=_PAGE_HEADERS)


def _license_section(title: str, file_name: str, text: str) -> str:
    """One licence text as an HTML section, everything escaped."""
    title, file_name = html.escape(title), html.escape(file_name)
    link = f'<a class="muted" href="/static/LICENSES/{file_name}">{file_name}</a>'
    return (
        f'<section class="panel" id="{title}"><h2>{title} {link}</h2><pre>{html.escape(text)}</pre></section>'
    )


def _license_order(path: Path) -> tuple[int, str]:
    """segloop first, NiiVue second, then the bundled packages by name."""
    first = ("segloop", "niivue")
    return (next((i for i, name in enumerate(first) if path.stem.startswith(name)), len(first)), path.stem)


@router.get("/favicon.ico")
def favicon() -> Response:
    """A small SVG icon (so browsers log no 404)."""
    return Response(_FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})
