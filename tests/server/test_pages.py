"""The pages and static files of `segloop serve`: served without sign-in, allow-listed, never outside."""

from __future__ import annotations

import gzip
import json

import pytest

from segloop.server.routes import pages


def test_dashboard_page_loads_without_sign_in_and_forbids_inline_scripts(make_client) -> None:
    client = make_client(count=1, require_sign_in=True)
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/static/js/dashboard.js" in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert response.headers["cache-control"] == "no-cache"
    assert "<script>" not in response.text  # no inline script: the policy would block it


def test_editor_page_validates_the_case_id(client) -> None:
    if not (pages.STATIC_DIR / "editor.html").is_file():
        pytest.skip("the editor page (editor.html) is not written yet")
    assert client.get("/edit/c0").status_code == 200
    assert "content-security-policy" in client.get("/edit/c0").headers


@pytest.mark.parametrize(("case_id", "status"), [("nope", 404), ("..hidden", 422), ("-rf", 422)])
def test_editor_page_of_an_unknown_or_malformed_case_is_a_problem(client, case_id, status) -> None:
    response = client.get(f"/edit/{case_id}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert case_id in response.json()["detail"]


def test_api_js_is_served_as_javascript_gzip_and_revalidated_by_etag(client) -> None:
    response = client.get("/static/js/api.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["content-encoding"] == "gzip"
    assert "export async function api" in response.text  # httpx decompresses
    again = client.get("/static/js/api.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_a_small_file_or_a_client_without_gzip_gets_plain_bytes(client) -> None:
    response = client.get("/static/css/app.css", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == (pages.STATIC_DIR / "css" / "app.css").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../segloop.toml",
        "/static/%2e%2e/%2e%2e/segloop.toml",
        "/static/js/%2e%2e/%2e%2e/routes/pages.py",
        "/static/%2e%2e/routes/pages.py",
        "/static/node_modules/@niivue/niivue/dist/index.js",
        "/static/node_modules/@niivue/niivue/package.json",
        "/static/package.json",
        "/static/package-lock.json",
        "/static/.hidden.js",
        "/static/js//api.js",
        "/static/js/nothing.js",
        "/static/",
    ],
)
def test_static_refuses_paths_outside_the_allow_list(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 404, (path, response.text)
    assert response.headers["content-type"] == "application/problem+json"


def test_static_refuses_a_link_leading_out_of_the_folder(client, tmp_path, monkeypatch) -> None:
    outside = tmp_path / "secret.js"
    outside.write_text("secret")
    static = tmp_path / "static"
    static.mkdir()
    (static / "link.js").symlink_to(outside)
    monkeypatch.setattr(pages, "STATIC_DIR", static)
    response = client.get("/static/link.js")
    assert response.status_code == 422
    assert "leaves" in response.json()["detail"]


def test_niivue_bundle_is_served_as_javascript(client) -> None:
    bundle = pages.STATIC_DIR.joinpath(*pages.NIIVUE_BUNDLE)
    if not bundle.is_file():
        pytest.skip("NiiVue is not installed (npm ci in src/segloop/server/static)")
    response = client.get("/static/vendor/niivue.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == bundle.read_bytes()


def test_niivue_not_installed_is_a_503_saying_how_to_install_it(client, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pages, "STATIC_DIR", tmp_path)
    response = client.get("/static/vendor/niivue.js")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "make setup" in response.json()["detail"]
    assert "npm ci" in response.json()["detail"]


def test_licences_page_lists_niivue_bsd2_and_its_dependencies(client) -> None:
    response = client.get("/licenses")
    assert response.status_code == 200
    assert "content-security-policy" in response.headers
    text = response.text
    assert text.index("segloop-Apache-2.0") < text.index("niivue-BSD-2-Clause")
    assert "Copyright (c) 2021, Niivue" in text
    assert "Apache License" in text
    for package in ("gl-matrix", "nifti-reader-js", "fflate", "ungap-structured-clone"):
        assert package in text, package
    linked = client.get("/static/LICENSES/niivue-BSD-2-Clause.txt")
    assert linked.status_code == 200
    assert linked.headers["content-type"] == "text/plain; charset=utf-8"


def test_every_runtime_package_of_the_bundle_has_its_licence_text() -> None:
    lock = json.loads((pages.STATIC_DIR / "package-lock.json").read_text())
    texts = [path.stem for path in (pages.STATIC_DIR / "LICENSES").glob("*.txt")]
    for key, package in lock["packages"].items():
        if not key or package.get("optional") or package.get("dev"):
            continue  # the root, or an optional build tool (not in the bundle)
        name = key.removeprefix("node_modules/")
        stem = "niivue" if name == "@niivue/niivue" else name.removeprefix("@").replace("/", "-")
        assert f"{stem}-{package['license']}" in texts, f"no licence text of {name} ({package['license']})"


def test_favicon_is_an_svg(client) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")


def test_pages_stay_out_of_the_openapi_schema(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/static", "/edit", "/licenses", "/favicon"))]
    assert "/" not in paths


def test_gzip_cache_serves_the_new_bytes_when_a_file_changes(tmp_path, monkeypatch, client) -> None:
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    script = static / "js" / "x.js"
    script.write_text("// one\n" * 400)
    monkeypatch.setattr(pages, "STATIC_DIR", static)
    first = client.get("/static/js/x.js", headers={"Accept-Encoding": "gzip"})
    script.write_text("// two\n" * 500)
    second = client.get("/static/js/x.js", headers={"Accept-Encoding": "gzip"})
    assert first.text.count("one") == 400
    assert second.text.count("two") == 500
    assert first.headers["etag"] != second.headers["etag"]
    assert gzip.decompress(pages._read(str(script), *_stat(script), True)) == script.read_bytes()


def _stat(path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
