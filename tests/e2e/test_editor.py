"""The editor in a real browser: edits made with the mouse end up as stored label versions.

Every test checks the voxels the server stored (read back with `segloop.store.Project`), not pixels.
The page is NiiVue in headless chromium with software WebGL (slow): tests are few, strokes short.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import drag_on_slice, editor_status, open_editor, wait_until

pytestmark = pytest.mark.browser

#: Written by `test_screenshot` when SEGLOOP_WRITE_SCREENSHOT=1 (the README shows it).
SCREENSHOT = REPO_ROOT / "docs" / "editor.png"
#: A stroke across the left half of the shown slice (fractions of its extent).
STROKE = [(0.25, 0.3), (0.35, 0.35), (0.45, 0.3)]


def stored_versions(server, case_id: str = "c0"):
    """The case's label versions, oldest first, and a reader of their voxels."""
    project = server.project
    return project.list_label_versions(case_id), project.read_labels


def shown_slice(page) -> int:
    """The index along voxel axis 2 (axial for the phantom's diagonal affine) of the shown slice."""
    return page.evaluate("() => window.__editor.currentVoxel()")[2]


def save(page, expect_error: bool = False) -> dict:
    """Click Save and wait until the page has a new head (or an error)."""
    before = editor_status(page).get("head")
    page.click("#save")
    if not expect_error:
        wait_until(page, f"!s.saving && !s.dirty && s.head !== {json.dumps(before)}")
    return editor_status(page)


def test_paint_add_save_stores_a_revised_version_of_the_stroke(live_server, page):
    status = open_editor(page, live_server)
    assert status["head"] is not None and status["firstSlice"] > 0
    (original,), read = stored_versions(live_server)
    k = shown_slice(page)
    page.click("#classes button:nth-child(2)")  # spleen
    page.click("#modes [data-mode=add]")
    drag_on_slice(page, STROKE)
    assert editor_status(page)["dirty"]

    status = save(page)

    versions, read = stored_versions(live_server)
    assert len(versions) == 2
    revised = versions[-1]
    assert status["head"] == revised.id
    assert (revised.source, revised.author, revised.parent_id) == ("revised", "local", original.id)
    assert revised.params["based_on"] == original.id
    assert revised.classes == ("spleen",) or "spleen" in revised.classes
    before, after = read(original), read(revised)
    changed = np.argwhere(before != after)
    assert len(changed) > 10
    assert set(changed[:, 2].tolist()) == {k}, "every changed voxel lies on the shown slice"
    assert set(after[before != after].tolist()) == {2}


def test_remove_and_ignore_modes_store_background_and_the_ignore_value(live_server, page):
    open_editor(page, live_server)
    (original,), read = stored_versions(live_server)
    ignore = live_server.project.config.schema.ignore_index
    k = shown_slice(page)
    page.click("#tools [data-tool=eraser]")
    page.fill("#pen-size", "5")
    page.dispatch_event("#pen-size", "change")
    drag_on_slice(page, [(0.3, 0.5), (0.4, 0.5)])  # across the liver
    page.click("#tools [data-tool=brush]")
    page.click("#modes [data-mode=ignore]")
    drag_on_slice(page, [(0.6, 0.75), (0.7, 0.75)])
    save(page)

    versions, read = stored_versions(live_server)
    before, after = read(original), read(versions[-1])
    changed = before != after
    assert set(np.argwhere(changed)[:, 2].tolist()) == {k}
    assert set(after[changed].tolist()) == {0, ignore}
    assert (before[changed & (after == 0)] > 0).all(), "the eraser only changed labelled voxels"


def test_undo_and_redo(live_server, page):
    open_editor(page, live_server)
    histogram = "() => window.__editor.histogram()"
    start = page.evaluate(histogram)
    drag_on_slice(page, STROKE)
    painted = page.evaluate(histogram)
    assert painted != start
    page.click("#undo")
    assert page.evaluate(histogram) == start
    page.click("#undo")  # nothing older: NiiVue's undo ring must not wrap round to the stroke
    assert page.evaluate(histogram) == start
    page.click("#redo")
    assert page.evaluate(histogram) == painted


@pytest.mark.parametrize("choice", ["keep", "theirs"])
def test_two_people_save_the_same_case_one_conflict_nothing_lost(serve, make_page, console, choice):
    """Ana saves first; Ben's save is refused (409) and he keeps his (on top of hers) or reloads hers."""
    from segloop.loop.users import create_user

    server = serve(require_sign_in=True)
    pages = {}
    for name in ("ana", "ben"):
        _, token = create_user(server.project, name)
        page = make_page()
        page.add_init_script(f"window.localStorage.setItem('segloop.token', {json.dumps(token)})")
        open_editor(page, server)
        pages[name] = page
    (original,), read = stored_versions(server)
    console.allow(r"status of 409")  # the refused save, answered by the conflict dialog

    pages["ana"].click("#classes button:nth-child(1)")
    drag_on_slice(pages["ana"], [(0.6, 0.75), (0.7, 0.75)])
    pages["ben"].click("#classes button:nth-child(3)")
    drag_on_slice(pages["ben"], [(0.6, 0.25), (0.7, 0.25)])
    bens = np.asarray(pages["ben"].evaluate("() => Array.from(window.__editor.nv.drawBitmap)"))
    save(pages["ana"])
    pages["ben"].click("#save")
    wait_until(pages["ben"], "s.conflict !== null")
    conflict = editor_status(pages["ben"])["conflict"]
    assert conflict["theirs"] > 0 and conflict["mine"] > 0
    pages["ben"].click(f"#conflict button[value={choice}]")
    wait_until(pages["ben"], "!s.saving && !s.dirty && s.conflict === null")

    versions, read = stored_versions(server)
    ana = read(versions[1]) != read(original)
    assert versions[1].author == "ana" and ana.any()
    if choice == "keep":
        assert [v.author for v in versions] == [original.author, "ana", "ben"]
        assert versions[2].params["based_on"] == versions[1].id, "ben saved on top of ana's version"
        final = read(versions[2])
        assert (final[ana] == read(versions[1])[ana]).all(), "ana's edit is in ben's version"
        assert (final == 3).sum() > (read(original) == 3).sum(), "ben's edit is stored too"
    else:
        assert [v.author for v in versions] == [original.author, "ana"], "ben stored no version"
        (draft,) = server.project.list_drafts("c0")
        assert draft.author == "ben", "ben's edit is kept as his draft"
        assert (server.project.read_draft(draft) == 3).sum() > (read(original) == 3).sum()
        shown = np.asarray(pages["ben"].evaluate("() => Array.from(window.__editor.nv.drawBitmap)"))
        assert not np.array_equal(shown, bens), "ben now sees ana's version"
        assert editor_status(pages["ben"])["head"] == versions[1].id


def test_draft_save_and_resume(live_server, make_page):
    page = make_page()
    open_editor(page, live_server)
    drag_on_slice(page, STROKE)
    page.click("#save-draft")
    wait_until(page, "s.draftSaved === true")
    drafts = live_server.project.list_drafts("c0")
    assert [d.author for d in drafts] == ["local"]
    painted = page.evaluate("() => window.__editor.histogram()")

    page.evaluate("() => { window.__status.dirty = false; }")  # leave without the unsaved-edits prompt
    open_editor(page, live_server)
    assert page.is_visible("#resume-draft")
    page.click("#resume-draft")
    wait_until(page, "s.draftResumed === true")
    assert page.evaluate("() => window.__editor.histogram()") == painted
    save(page)
    versions, _ = stored_versions(live_server)
    assert len(versions) == 2 and versions[-1].author == "local"
    assert live_server.project.list_drafts("c0") == []


def test_approve_as_is(live_server, page):
    open_editor(page, live_server)
    (original,), read = stored_versions(live_server)
    page.click("#approve")
    wait_until(page, "s.lastSave !== null")
    versions, read = stored_versions(live_server)
    assert len(versions) == 2
    assert (versions[-1].source, versions[-1].parent_id) == ("revised", original.id)
    assert np.array_equal(read(versions[-1]), read(original))


def test_screenshot(live_server, page):
    """The README's picture of the editor (written only with SEGLOOP_WRITE_SCREENSHOT=1)."""
    open_editor(page, live_server)
    page.click("#tools [data-tool=contour]")
    page.click("#contour-load")  # the liver's outline on the shown slice as control points
    wait_until(page, "(s.contourSlices || []).length === 1")
    assert len(page.evaluate("() => window.__editor.contourPolygons()")[0]["points"]) >= 4
    image = page.screenshot()
    assert len(image) > 10_000
    if os.environ.get("SEGLOOP_WRITE_SCREENSHOT") == "1":
        Path(SCREENSHOT).parent.mkdir(exist_ok=True)
        Path(SCREENSHOT).write_bytes(image)


def test_grow_from_scribbles_preview_accept_save(live_server, page):
    open_editor(page, live_server)
    (original,), read = stored_versions(live_server)
    before = read(original)
    page.click("#tools [data-tool=grow]")
    page.click("#classes button:nth-child(2)")  # spleen, centred near (0.70, 0.55) of the slice
    drag_on_slice(page, [(0.68, 0.55), (0.72, 0.56)], steps=2)
    page.click("#grow-background")
    drag_on_slice(page, [(0.55, 0.22), (0.62, 0.22)], steps=2)
    page.click("#classes button:nth-child(1)")  # liver, centred near (0.35, 0.45)
    drag_on_slice(page, [(0.33, 0.45), (0.37, 0.45)], steps=2)
    page.click("#grow-preview")
    wait_until(page, "s.preview !== null")
    assert editor_status(page)["preview"]["changed"] > 0
    page.click("#preview-accept")
    save(page)

    versions, read = stored_versions(live_server)
    after = read(versions[-1])
    changed = before != after
    assert set(after[changed].tolist()) <= {1, 2}, "grow only added the scribbled classes"
    assert len(set(np.argwhere(changed)[:, 2].tolist())) > 1, "grow works in 3D, beyond the slice"
    assert {"liver", "spleen"} <= set(versions[-1].classes)


def test_contour_edit_on_two_slices_and_reinterpolate(live_server, page):
    open_editor(page, live_server)
    (original,), read = stored_versions(live_server)
    before = read(original)
    page.click("#tools [data-tool=contour]")
    page.click("#classes button:nth-child(1)")  # liver
    moved = []
    for k in (30, 38):
        page.evaluate(f"() => window.__editor.moveToVoxel([32, 32, {k}])")
        page.click("#contour-load")
        wait_until(page, f"(s.contourSlices || []).includes({k})")
        polygon = max(
            page.evaluate("() => window.__editor.contourPolygons()"), key=lambda p: len(p["points"])
        )
        # the point furthest from the liver's centre, dragged 5 voxels further out along i
        point = max(polygon["points"], key=lambda p: abs(p[0] - 22) + abs(p[1] - 29))
        target = [point[0] + 5 * np.sign(point[0] - 22), point[1], k]
        start = page.evaluate("(v) => window.__editor.voxelPoint(v)", point)
        end = page.evaluate("(v) => window.__editor.voxelPoint(v)", target)
        page.mouse.move(*start)
        page.mouse.down()
        page.mouse.move(*end, steps=2)
        page.mouse.up()
        points = [p["points"] for p in page.evaluate("() => window.__editor.contourPolygons()")]
        assert len(points) == 1 and any(np.hypot(p[0] - target[0], p[1] - target[1]) < 1 for p in points[0])
        moved.append([round(c) for c in target])
    page.click("#contour-preview")
    wait_until(page, "s.preview !== null")
    page.click("#preview-accept")
    save(page)

    versions, read = stored_versions(live_server)
    after = read(versions[-1])
    assert "liver" in versions[-1].classes
    for k in range(30, 39):
        assert (after[:, :, k] == 1).sum() > 0.5 * (before[:, :, k] == 1).sum(), f"liver kept on slice {k}"
    changed_slices = set(np.argwhere(before != after)[:, 2].tolist())
    assert changed_slices <= set(range(30, 39)), "only the slices between the edited ones changed"
    for i, j, k in moved:
        near = after[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3, k]
        assert (near == 1).any(), f"the dragged point {i, j, k} pulled the liver out"


def test_a_2d_image_opens_as_one_slice_and_its_first_label_saves(serve, page):
    server = serve(shape=(64, 48, 1), labeled=())
    status = open_editor(page, server)
    assert status["head"] is None and status["etag"] == '"none"'
    drag_on_slice(page, STROKE, steps=2)
    save(page)
    (version,) = server.project.list_label_versions("c0")
    labels = server.project.read_labels(version)
    assert labels.shape == (64, 48, 1)
    assert (version.source, version.classes, version.parent_id) == ("revised", ("liver",), None)
    assert (labels == 1).sum() > 10 and set(np.unique(labels).tolist()) == {0, 1}


def test_uncertainty_map_toggle_and_jump_to_the_most_uncertain_slice(live_server, page):
    from tests.server.test_cases_api import add_prediction

    add_prediction(live_server.project, "c0", hot_slice=50)
    open_editor(page, live_server)
    assert shown_slice(page) != 50
    page.click("#jump-uncertain")
    assert shown_slice(page) == 50
    page.click("#gl")  # NiiVue's canvas has the focus: its own arrow keys must not move the crosshair too
    voxel = page.evaluate("() => window.__editor.currentVoxel()")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("PageDown")
    assert page.evaluate("() => window.__editor.currentVoxel()") == [voxel[0], voxel[1], 47]
    page.check("#entropy")
    page.wait_for_function("() => window.__editor.nv.volumes.length === 2")
    assert page.evaluate("() => window.__editor.nv.volumes[1].opacity") > 0
    page.uncheck("#entropy")
    page.wait_for_function("() => window.__editor.nv.volumes[1].opacity === 0")


def test_threshold_and_click_an_island_preview_accept_save(serve, page):
    server = serve(labeled=())  # nothing labelled yet: the island is all the label
    open_editor(page, server)
    page.evaluate("() => window.__editor.moveToVoxel([42, 42, 26])")  # inside the left kidney (150 HU)
    page.click("#tools [data-tool=threshold]")
    page.click("#classes button:nth-child(3)")  # kidney_left
    page.select_option("#threshold-preset", "")
    page.fill("#threshold-low", "100")
    page.fill("#threshold-high", "400")
    page.mouse.click(*page.evaluate("() => window.__editor.voxelPoint([42, 42, 26])"))
    wait_until(page, "s.preview !== null")
    page.click("#preview-accept")
    save(page)

    (version,), read = stored_versions(server)
    after = read(version)
    assert set(np.unique(after).tolist()) == {0, 3} and version.classes == ("kidney_left",)
    island = np.argwhere(after == 3)
    assert len(set(island[:, 2].tolist())) > 3, "the island is 3D"
    assert island[:, 0].min() > 32, "only the clicked (left) kidney, not the right one"


def test_polygons_clicked_on_two_slices_filled_between(serve, page):
    server = serve(labeled=())
    open_editor(page, server)
    page.click("#tools [data-tool=contour]")
    page.click("#classes button:nth-child(2)")  # spleen
    square = [(40, 30), (50, 30), (50, 40), (40, 40)]
    for k in (28, 34):
        page.evaluate(f"() => window.__editor.moveToVoxel([32, 32, {k}])")
        for i, j in square:
            page.mouse.click(*page.evaluate("(v) => window.__editor.voxelPoint(v)", [i, j, k]))
        page.keyboard.press("Enter")
        wait_until(page, f"(s.contourSlices || []).includes({k})")
    page.click("#contour-preview")
    wait_until(page, "s.preview !== null")
    page.click("#preview-accept")
    save(page)

    (version,), read = stored_versions(server)
    labels = read(version)
    assert version.classes == ("spleen",) and set(np.unique(labels).tolist()) == {0, 2}
    assert sorted(set(np.argwhere(labels == 2)[:, 2].tolist())) == list(range(28, 35))
    inside = np.zeros(labels.shape, bool)
    inside[41:50, 31:40, 28:35] = True  # the square's interior (its edges run through voxel centres)
    edges = np.zeros(labels.shape, bool)
    edges[40:51, 30:41, 28:35] = True
    assert (labels[inside] == 2).all() and not (labels[~edges] == 2).any()
