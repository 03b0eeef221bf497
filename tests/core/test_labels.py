import numpy as np
import pytest

from segloop.core import LabelSchema
from segloop.errors import LabelValueError, SegloopError, UnknownClassError


def test_ignore_index_is_the_highest_value_after_the_classes():
    schema = LabelSchema.from_names(["a", "b", "c"])
    assert schema.ignore_index == 4
    assert schema.dtype == np.uint8
    assert LabelSchema.from_names([f"c{i}" for i in range(300)]).dtype == np.uint16


def test_unknown_class_names_list_the_known_ones():
    schema = LabelSchema.from_names(["liver", "spleen"])
    with pytest.raises(UnknownClassError, match="unknown class 'kidney': expected one of liver, spleen"):
        schema.index_of("kidney")


@pytest.mark.parametrize("names", [["liver", "liver"], ["ignore"], ["background"], ["two words"], []])
def test_bad_schemas_are_rejected(names):
    with pytest.raises(SegloopError):
        LabelSchema.from_names(names)


def test_check_values_accepts_classes_and_ignore_and_rejects_the_rest():
    schema = LabelSchema.from_names(["a", "b"])
    schema.check_values(np.array([0, 1, 2, 3]))
    with pytest.raises(
        LabelValueError, match=r"values 4, 9 outside the schema: expected 0 \(background\), 1..2"
    ):
        schema.check_values(np.array([0, 4, 9]))
    with pytest.raises(LabelValueError, match="non-integer"):
        schema.check_values(np.array([0.5]))


def test_records_round_trip():
    schema = LabelSchema.from_names(["a", "b"], colors=[(1, 2, 3), (4, 5, 6)])
    assert LabelSchema.from_records(schema.to_records()) == schema
