"""The vectorised assembly equals the class-by-class algorithm it replaced, and is fast on a CT."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segloop.core.assembly import LabelLayer, assemble_labels, value_mask
from segloop.core.provenance import Source

SOURCES = [s.value for s in Source]
SHAPE = (2, 3, 4)


def reference_assembly(layers, *, n_classes, ignore_index):
    """The algorithm before vectorising (one pass per class per layer), kept as the specification.

    Returns:
        ``(labels, ignore_mask, class_sources, explicit_ignore)``.
    """
    shape = layers[0].labels.shape
    ordered = sorted(enumerate(layers), key=lambda item: (Source(item[1].source).priority, item[0]))
    labels = np.zeros(shape, dtype=np.uint8)
    explicit_ignore = np.zeros(shape, dtype=bool)
    class_sources = {}
    every_class = set(range(1, n_classes + 1))
    for _, layer in ordered:
        speaks = layer.speaks(ignore_index)
        for value in layer.classes:
            stale = labels == value
            assigned = layer.labels == value
            if speaks is not None:
                stale &= speaks
                assigned &= speaks
            labels[stale] = 0
            labels[assigned] = value
            explicit_ignore[assigned] = False
            class_sources[value] = layer.version_id
        if layer.source != Source.SPARSE:
            inside = np.ones(shape, dtype=bool) if layer.coverage is None else layer.coverage
            if every_class <= set(layer.classes):
                explicit_ignore[inside & (layer.labels != ignore_index)] = False
            explicit_ignore |= inside & (layer.labels == ignore_index)
    covered_all = np.ones(shape, dtype=bool)
    for value in every_class:
        speaking = [layer.speaks(ignore_index) for layer in layers if value in layer.classes]
        if any(mask is None for mask in speaking):
            continue
        covered = np.zeros(shape, dtype=bool)
        for mask in speaking:
            covered |= mask
        covered_all &= covered
    ignore_mask = explicit_ignore | (~covered_all & (labels == 0))
    labels[ignore_mask] = ignore_index
    return labels, ignore_mask, class_sources, explicit_ignore


@st.composite
def label_stacks(draw):
    """``(layers, n_classes)``: 1-4 random versions (any source, classes, coverage, memory order)."""
    n_classes = draw(st.integers(1, 4))
    ignore = n_classes + 1
    layers = []
    for version_id in range(1, draw(st.integers(1, 4)) + 1):
        labels = draw(hnp.arrays(np.uint8, SHAPE, elements=st.integers(0, ignore)))
        if draw(st.booleans()):
            labels = np.asfortranarray(labels)  # as NIfTI reads: the lookup runs in memory order
        classes = draw(st.lists(st.integers(1, n_classes), unique=True, max_size=n_classes))
        coverage = draw(st.none() | hnp.arrays(np.bool_, SHAPE))
        source = draw(st.sampled_from(SOURCES))
        layers.append(LabelLayer(labels, source, tuple(classes), version_id, coverage))
    return layers, n_classes


@settings(max_examples=400, deadline=None)
@given(label_stacks())
def test_vectorised_assembly_equals_the_class_by_class_reference(stack):
    layers, n_classes = stack
    before = [layer.labels.copy() for layer in layers]
    result = assemble_labels(layers, n_classes=n_classes, ignore_index=n_classes + 1)
    labels, ignore_mask, sources, explicit = reference_assembly(
        layers, n_classes=n_classes, ignore_index=n_classes + 1
    )
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.ignore_mask, ignore_mask)
    assert result.class_sources == sources
    auto = ignore_mask & ~explicit
    if result.auto_ignore is None:
        assert not auto.any()
    else:
        np.testing.assert_array_equal(result.auto_ignore, auto)
    editable = np.where(auto, 0, labels)
    np.testing.assert_array_equal(result.editable_labels, editable)
    for layer, labels_before in zip(layers, before, strict=True):
        np.testing.assert_array_equal(layer.labels, labels_before)  # inputs untouched


def test_editable_labels_keep_explicit_ignores_and_drop_auto_ignore():
    # spleen (2) is annotated by nobody: background is auto-ignored; the original's 3 is explicit
    original = LabelLayer(np.array([[[1, 0, 3, 0]]], np.uint8), "original", (1,), 1)
    result = assemble_labels([original], n_classes=2, ignore_index=3)
    assert result.labels.ravel().tolist() == [1, 3, 3, 3]
    assert result.editable_labels.ravel().tolist() == [1, 0, 3, 0]


def _ct_layers(shape=(512, 512, 128), n_classes=7):
    rng = np.random.default_rng(0)
    pseudo = rng.integers(0, n_classes + 1, shape, dtype=np.uint8)
    revised = np.where(np.isin(pseudo, (1, 2, 3)), pseudo, 0).astype(np.uint8)
    revised[:40, :40, :8] = n_classes + 1
    return [
        LabelLayer(pseudo, "pseudo", tuple(range(1, n_classes + 1)), 1),
        LabelLayer(revised, "revised", (1, 2, 3), 2),
        LabelLayer(np.where(pseudo == 4, 4, 0).astype(np.uint8), "revised", (4,), 3),
    ]


@pytest.mark.slow
def test_assembly_of_a_ct_with_seven_classes_and_three_versions_takes_well_under_a_second():
    layers = _ct_layers()
    started = time.perf_counter()
    assemble_labels(layers, n_classes=7, ignore_index=8)
    seconds = time.perf_counter() - started
    assert seconds < 2.0, f"assembly of 512x512x128 took {seconds:.2f} s"  # ~0.3 s idle, shared machine


@given(hnp.arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 12)), st.sets(st.integers(0, 10), min_size=1))
def test_value_mask_equals_isin_in_either_memory_order(array, values):
    for ordered in (array, np.asfortranarray(array), array[:, ::2]):  # C, Fortran, neither
        np.testing.assert_array_equal(value_mask(ordered, values), np.isin(ordered, list(values)))
