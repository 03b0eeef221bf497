import nrrd
import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import CorruptFileError
from segloop.io import read_volume, write_volume
from segloop.io.slicer_seg import segments_to_masks

SEGMENTS = [
    {"id": "liver", "name": "liver", "color": (221, 130, 101), "label_value": 1, "layer": 0},
    {"id": "spleen", "name": "spleen", "color": (157, 108, 162), "label_value": 2, "layer": 0},
]


def _labels():
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[4:, 4:, 4:] = 2
    return labels


def test_segments_round_trip_with_names_colours_and_values(tmp_path):
    volume = Volume(_labels(), np.diag([0.8, 0.8, 2.0, 1.0]), {"segments": SEGMENTS})
    path = write_volume(volume, tmp_path / "x.seg.nrrd")
    read = read_volume(path)
    assert read.meta["segments"] == SEGMENTS
    np.testing.assert_array_equal(read.array, _labels())
    header = nrrd.read_header(str(path))
    assert header["Segment1_Name"] == "spleen"
    assert header["Segment1_Extent"] == "4 5 4 6 4 7"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"


def _write_slicer_style(path, array, fields, kinds):
    header = {
        "space": "left-posterior-superior",
        "space directions": np.vstack([np.full((array.ndim - 3, 3), np.nan), -np.eye(3) * [1, 1, -1]]),
        "space origin": np.array([-10.0, -20.0, 5.0]),
        "kinds": kinds,
        "encoding": "gzip",
        **fields,
    }
    nrrd.write(str(path), array, header)


def test_layered_segmentations_keep_overlapping_segments(tmp_path):
    layers = np.zeros((2, 4, 4, 4), np.uint8)
    layers[0, :2] = 1  # tumour in layer 0
    layers[1, 1:3] = 5  # organ in layer 1, overlapping the tumour at I == 1
    fields = {
        "Segment0_ID": "Segment_1",
        "Segment0_Name": "tumour",
        "Segment0_Color": "1 0 0",
        "Segment0_LabelValue": "1",
        "Segment0_Layer": "0",
        "Segment1_ID": "Segment_2",
        "Segment1_Name": "organ",
        "Segment1_Color": "0 1 0",
        "Segment1_LabelValue": "5",
        "Segment1_Layer": "1",
    }
    _write_slicer_style(tmp_path / "layered.seg.nrrd", layers, fields, ["list", "domain", "domain", "domain"])
    volume = read_volume(tmp_path / "layered.seg.nrrd")
    assert volume.array.shape == (2, 4, 4, 4)
    masks = {segment["name"]: mask for segment, mask in segments_to_masks(volume)}
    assert masks["tumour"][:2].all() and masks["organ"][1:3].all()
    assert (masks["tumour"] & masks["organ"]).sum() == 16
    # LPS origin (-10, -20, 5) is RAS (10, 20, 5)
    np.testing.assert_allclose(volume.affine[:3, 3], [10, 20, 5])
    again = read_volume(write_volume(volume, tmp_path / "again.seg.nrrd"))
    np.testing.assert_array_equal(again.array, layers)
    np.testing.assert_array_equal(again.affine, volume.affine)


def test_pre_4_11_files_have_one_binary_layer_per_segment(tmp_path):
    layers = np.zeros((2, 3, 3, 3), np.uint8)
    layers[0, 0] = 1
    layers[1, 2] = 1
    fields = {
        "Segment0_Name": "a",
        "Segment0_Color": "1 0 0",
        "Segment1_Name": "b",
        "Segment1_Color": "0 0 1",
    }
    _write_slicer_style(tmp_path / "old.seg.nrrd", layers, fields, ["list", "domain", "domain", "domain"])
    masks = {s["name"]: m for s, m in segments_to_masks(read_volume(tmp_path / "old.seg.nrrd"))}
    assert masks["a"][0].all() and not masks["a"][2].any()
    assert masks["b"][2].all() and not masks["b"][0].any()


def test_a_segment_in_a_missing_layer_is_corrupt(tmp_path):
    fields = {"Segment0_Name": "a", "Segment0_LabelValue": "1", "Segment0_Layer": "3"}
    _write_slicer_style(tmp_path / "bad.seg.nrrd", np.zeros((3, 3, 3), np.uint8), fields, ["domain"] * 3)
    with pytest.raises(CorruptFileError, match="segment 'a' is in layer 3, but the file has 1"):
        read_volume(tmp_path / "bad.seg.nrrd")
