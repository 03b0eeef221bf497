"""A real OpenKBP head-and-neck CT (128³, stored P-L-I, not RAS) opens in the editor and saves.

The stroke must land on the slice the editor shows, in the case's own voxel order: NiiVue reorients
for display and writes the drawing back in the file's order (a wrong orientation would put it on
another slice, or mirror it).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import OPENKBP_CLASSES
from tests.e2e.conftest import drag_on_slice, editor_status, open_editor, wait_until

pytestmark = pytest.mark.browser

CASE = "openkbp_pt_100"


@pytest.fixture
def openkbp_project(tmp_path, openkbp):
    """A project of one OpenKBP case, its clinical contours stored as a ``pseudo`` label."""
    from segloop.loop.cases import import_cases, init_project

    project = init_project(tmp_path / "kbp", OPENKBP_CLASSES.split(","), defaults={"window": [400, 1064]})
    import_cases(
        project,
        [openkbp / "imagesTr" / f"{CASE}_0000.nii.gz"],
        labels_dir=openkbp / "labelsTr",
        source="pseudo",
    )
    return project


def test_openkbp_case_opens_and_a_stroke_is_stored_on_the_shown_slice(serve, openkbp_project, page):
    server = serve(openkbp_project)
    status = open_editor(page, server, CASE)
    assert status["head"] is not None
    case = openkbp_project.get_case(CASE)
    axial = int(np.argmax(np.abs(np.asarray(case.affine)[2, :3])))
    shown = page.evaluate("() => window.__editor.currentVoxel()")[axial]
    (original,) = openkbp_project.list_label_versions(CASE)
    assert page.get_attribute("#windows [data-window='400,1064']", "aria-pressed") == "true"

    page.click("#classes button:nth-child(7)")  # mandible
    # 30 % of the way from posterior to anterior: the case stores A = -4.688 mm * i (i runs posterior),
    # so the stroke lies near i = 127 - 0.3 * 128 = 89; a mirrored write would put it near i = 38
    drag_on_slice(page, [(0.4, 0.3), (0.5, 0.32), (0.6, 0.3)], steps=3)
    page.click("#save")
    wait_until(page, "!s.saving && !s.dirty && s.lastSave !== null")

    versions = openkbp_project.list_label_versions(CASE)
    assert editor_status(page)["head"] == versions[-1].id
    before, after = openkbp_project.read_labels(original), openkbp_project.read_labels(versions[-1])
    changed = np.argwhere(before != after)
    assert len(changed) > 10
    assert set(changed[:, axial].tolist()) == {shown}, "the stroke is on the shown slice"
    assert set(after[before != after].tolist()) == {7}
    assert abs(changed[:, 0].mean() - 89) < 5, "the stroke is where it was drawn (not mirrored)"
    spread = np.ptp(changed, axis=0)
    in_plane = [a for a in range(3) if a != axial]
    assert spread[in_plane].max() >= 10, "the stroke runs across the slice"
