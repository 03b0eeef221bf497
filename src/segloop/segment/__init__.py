"""Labeling tools that need no training: pure array functions (arrays in, new arrays out).

Every function takes ``(I, J, K)`` arrays with the voxel size ``spacing_mm`` where distances
matter, never modifies its inputs, and raises `segloop.errors.SegloopError` subclasses with
one-line messages for bad input.
"""
