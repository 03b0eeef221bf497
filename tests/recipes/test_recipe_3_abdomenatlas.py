"""Recipe 3 (AbdomenAtlas, seed 002): pseudo labels, attention map, a revised organ, continual, SwinUNETR."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import InvalidInputError
from segloop.io import read_volume
from segloop.loop.labels import compute_effective_label
from segloop.loop.ranking import attention_volume
from segloop.store import Project
from tests.conftest import SHARED_DATA
from tests.recipes.conftest import run_recipe

LABELS = SHARED_DATA / "openkbp-headneck-ct" / "labelsTr"
SWIN_FEATURES = (12, 24, 48, 96, 192)


def _sources(project: Project, case_id: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(v.source, v.classes) for v in project.list_label_versions(case_id)]


@pytest.mark.slow
def test_recipe_3_abdomenatlas(tmp_path):
    run_recipe(3, tmp_path)
    project = Project.open(tmp_path / "atlas")
    schema = project.config.schema
    names, mandible = schema.names, schema.index_of("mandible")
    drawn = ("brainstem", "spinal_cord", "mandible")

    # versions and sources: original as imported, pseudo from `predict`, revised from `correct`
    assert _sources(project, "openkbp_pt_4") == [("original", names)]
    assert _sources(project, "openkbp_pt_17") == [("original", drawn), ("pseudo", names)]
    assert _sources(project, "openkbp_pt_22") == [("pseudo", names), ("revised", ("mandible",))]
    pseudo_22, revised_22 = project.list_label_versions("openkbp_pt_22")
    assert revised_22.parent_id == pseudo_22.id and pseudo_22.tool.startswith("model 1")
    [prediction] = project.list_predictions("openkbp_pt_22")
    assert (prediction.model_id, prediction.label_version_id) == (1, pseudo_22.id)

    # the effective label takes original > revised > pseudo per class
    original_17, pseudo_17 = project.list_label_versions("openkbp_pt_17")
    sources_17 = compute_effective_label(project, project.get_case("openkbp_pt_17")).class_sources
    assert sources_17 == {schema.index_of(n): (original_17.id if n in drawn else pseudo_17.id) for n in names}
    sources_22 = compute_effective_label(project, project.get_case("openkbp_pt_22")).class_sources
    assert sources_22 == {
        schema.index_of(n): (revised_22.id if n == "mandible" else pseudo_22.id) for n in names
    }
    reference_17 = read_volume(LABELS / "openkbp_pt_17.nii.gz").array
    effective_17 = compute_effective_label(project, project.get_case("openkbp_pt_17")).labels
    for name in drawn:  # the original organs, voxel for voxel
        value = schema.index_of(name)
        assert np.array_equal(effective_17 == value, reference_17 == value), name

    # exports: before the revision the pseudo label as predicted; after it the mandible is the person's
    pseudo_labels = project.read_labels(pseudo_22)
    before = read_volume(tmp_path / "pt22_label.nii.gz")
    assert np.array_equal(before.array, pseudo_labels)
    reference_22 = read_volume(LABELS / "openkbp_pt_22.nii.gz").array
    after = read_volume(tmp_path / "pt22_revised.nii.gz").array
    assert np.array_equal(after == mandible, reference_22 == mandible)
    kept = (after != mandible) & (pseudo_labels != mandible) & (reference_22 != mandible)
    assert np.array_equal(after[kept], pseudo_labels[kept])  # the other organs stay the prediction's

    # the attention map: float, on the case's grid, as the ranking computes it for the 7 organs
    case = project.get_case("openkbp_pt_22")
    attention = read_volume(tmp_path / "pt22_attention.nii.gz")
    assert attention.spatial_shape == case.shape and np.allclose(attention.affine, case.affine)
    assert attention.array.dtype == np.float32 and float(attention.array.min()) >= 0.0
    assert 0.0 < float(attention.array.max()) <= len(names)  # entropy (bits) summed over organs
    assert np.allclose(attention.array, attention_volume(project, case.case_id, classes=names).array)

    # full, then continual (from model 1, with the pseudo labels), then SwinUNETR from model.pt
    models = project.list_models()
    assert [(m.id, m.mode, m.parent_id, m.status) for m in models] == [
        (1, "full", None, "done"),
        (2, "continual", 1, "done"),
        (3, "full", None, "done"),
    ]
    assert models[1].config["include_pseudo"] and "openkbp_pt_22" in (
        models[1].train_case_ids + models[1].val_case_ids
    )
    swin = models[2]
    assert (swin.config["network"], tuple(swin.config["features"]), swin.config["norm"]) == (
        "swinunetr",
        SWIN_FEATURES,
        "instance",
    )
    assert swin.config["init_weights"] == "model.pt" and swin.metrics["epochs"] >= 1
    _check_swin_weights(project, tmp_path, swin)


def _check_swin_weights(project: Project, folder, swin) -> None:
    """Model 3 started from model.pt (not fresh weights); a bundle of 14 organs is refused by its keys."""
    import torch

    from segloop.engine.checkpoint import read_checkpoint
    from segloop.engine.networks import build_network
    from segloop.loop.training import train_config, train_project

    n_classes = project.config.schema.ignore_index
    start = torch.load(folder / "model.pt", weights_only=True)
    trained = read_checkpoint(project.root / swin.checkpoint)["model_state"]
    config = train_config(project, network="swinunetr", features=SWIN_FEATURES)
    torch.manual_seed(0)
    fresh = build_network(config, 1, n_classes).state_dict()
    weights = [k for k in start if start[k].is_floating_point() and start[k].numel() > 1000]
    moved = sum(float((trained[k] - start[k]).norm()) for k in weights)
    unrelated = sum(float((fresh[k] - start[k]).norm()) for k in weights)
    assert moved < 0.2 * unrelated  # a few steps from model.pt: far closer to it than fresh weights

    btcv = build_network(config, 1, 14).state_dict()  # MONAI's BTCV bundle: 13 organs + background
    torch.save(btcv, folder / "btcv_model.pt")
    count = len(project.list_models())
    with pytest.raises(
        InvalidInputError, match=r"do not fit this swinunetr network: 2 of another shape"
    ) as error:
        train_project(project, config, init_weights=folder / "btcv_model.pt", author="test")
    assert "out.conv.conv.weight (14, 12" in str(error.value) and "\n" not in str(error.value)
    assert len(project.list_models()) == count  # refused before a run is recorded
