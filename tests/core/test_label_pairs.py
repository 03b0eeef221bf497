"""Left-right class pairs in the label schema: declared, validated, round-tripped through segloop.toml."""

from __future__ import annotations

import pytest

from segloop.core.labels import LabelSchema
from segloop.errors import InvalidInputError, UnknownClassError
from segloop.store.config import ProjectConfig, read_config, write_config

NAMES = ["Brainstem", "RightParotid", "LeftParotid", "RightEye", "LeftEye"]


def _record(index: int, name: str, **extra) -> dict:
    return {"index": index, "name": name, "color": [1, 2, 3], **extra}


def test_pairs_map_to_label_values_and_partners():
    schema = LabelSchema.from_names(NAMES, pairs=[("RightParotid", "LeftParotid"), ("LeftEye", "RightEye")])
    assert schema.pair_indices() == ((2, 3), (5, 4))
    assert schema.partner_of("LeftParotid") == "RightParotid"
    assert schema.partner_of("Brainstem") is None
    assert LabelSchema.from_names(NAMES).pair_indices() == ()


def test_pairs_round_trip_through_records_and_the_project_file(tmp_path):
    schema = LabelSchema.from_names(NAMES, pairs=[("RightParotid", "LeftParotid")])
    records = schema.to_records()
    assert [r.get("pair") for r in records] == [None, "LeftParotid", "RightParotid", None, None]
    assert LabelSchema.from_records(records) == schema
    path = tmp_path / "segloop.toml"
    write_config(ProjectConfig("p", schema), path)
    assert read_config(path).schema == schema
    assert "pair" in path.read_text(encoding="utf-8")


def test_a_pair_declared_on_one_class_only_counts():
    records = [_record(1, "lung_r", pair="lung_l"), _record(2, "lung_l")]
    assert LabelSchema.from_records(records).pairs == (("lung_r", "lung_l"),)
    reversed_records = [_record(1, "lung_r"), _record(2, "lung_l", pair="lung_r")]
    assert LabelSchema.from_records(reversed_records).pairs == (("lung_r", "lung_l"),)


def test_a_pair_naming_an_unknown_class_fails_in_one_line():
    with pytest.raises(UnknownClassError, match="unknown class 'lung_x'") as error:
        LabelSchema.from_records([_record(1, "lung_r", pair="lung_x"), _record(2, "lung_l")])
    assert "\n" not in str(error.value)


def test_a_class_in_two_pairs_fails_in_one_line():
    records = [_record(1, "a", pair="b"), _record(2, "b", pair="c"), _record(3, "c")]
    with pytest.raises(InvalidInputError, match="'b' is in two pairs") as error:
        LabelSchema.from_records(records)
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidInputError, match="two different class names"):
        LabelSchema.from_names(["a", "b"], pairs=[("a", "a")])
