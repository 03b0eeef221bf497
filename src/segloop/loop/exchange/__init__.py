"""Use cases of `segloop exchange`: a project's cases and labels in other tools' layouts, and back.

One table, `FORMATS`, names every format with its export and import functions and the options
each takes; faces (the CLI, a server) list and dispatch from it. A new format is a module and a
row.

Exports write a folder atomically (a temporary sibling renamed at the end: a failed export leaves
nothing, and two exports to one new folder cannot both win). They write the labels of
``sources`` only (default `DEFAULT_SOURCES`, the labels people made: a model's own predictions
are not handed on as training data unless asked) and record the versions used where the layout
has room. Every output path is checked to stay inside the export folder.

Imports run through `segloop.loop.imports`, the pipeline `segloop add` uses: every file is read
and checked before the project changes, case ids are validated, labels are staged in the object
store and everything is added in one transaction, so bad input (a label on another grid, values
or class names the schema lacks, a COCO result pointing nowhere) leaves the project as it was. A
label version identical to one the case already has (same content, source and classes) is not
added twice, so importing what was exported is harmless.

Provenance: every imported version records the tool, the source file and its SHA-256 and the
parameters (score threshold, post-processing radii, value maps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from segloop.errors import InvalidInputError
from segloop.loop.exchange.abdomenatlas import export_abdomenatlas, import_abdomenatlas
from segloop.loop.exchange.coco import export_coco_slices, import_coco_results
from segloop.loop.exchange.common import DEFAULT_SOURCES, ExportReport, ImportReport
from segloop.loop.exchange.image_folder import export_image_folder, import_image_folder
from segloop.loop.exchange.monailabel import export_monailabel, import_monailabel
from segloop.loop.exchange.nnunet import export_nnunet, import_nnunet_dataset, import_nnunet_predictions

__all__ = [
    "DEFAULT_SOURCES",
    "FORMATS",
    "ExchangeFormat",
    "ExportReport",
    "ImportReport",
    "export_abdomenatlas",
    "export_coco_slices",
    "export_image_folder",
    "export_monailabel",
    "export_nnunet",
    "get_format",
    "import_abdomenatlas",
    "import_coco_results",
    "import_image_folder",
    "import_monailabel",
    "import_nnunet_dataset",
    "import_nnunet_predictions",
    "list_formats",
]


@dataclass(frozen=True)
class ExchangeFormat:
    """One row of the format table.

    Attributes:
        name: what users type (``nnunet``, ``coco-slices``, ...).
        description: one line.
        export: ``export(project, out_dir, *, case_ids, sources, overwrite, **options)``, or None.
        export_options: the keyword options the export takes beyond those.
        import_: ``import_(project, path, *, author, **options)`` (``paths`` when
            ``many_paths``), or None.
        import_options: the keyword options the import takes.
        many_paths: the import takes several files (a list) instead of one folder or file.
    """

    name: str
    description: str
    export: Callable[..., ExportReport] | None = None
    export_options: tuple[str, ...] = ()
    import_: Callable[..., ImportReport] | None = None
    import_options: tuple[str, ...] = ()
    many_paths: bool = False


FORMATS: dict[str, ExchangeFormat] = {
    row.name: row
    for row in (
        ExchangeFormat(
            "nnunet",
            "nnU-Net v2 raw dataset (DatasetXXX_Name/imagesTr, labelsTr, imagesTs, dataset.json)",
            export_nnunet,
            ("dataset_id", "name"),
            import_nnunet_dataset,
            ("source",),
        ),
        ExchangeFormat(
            "nnunet-predictions",
            "nnUNetv2_predict output: <case>.nii.gz label maps -> pseudo versions",
            import_=import_nnunet_predictions,
        ),
        ExchangeFormat(
            "coco-slices",
            "2D slices as JPG with COCO polygons and segloop provenance",
            export_coco_slices,
            ("plane", "window", "long_side", "all_slices", "split_thirds"),
        ),
        ExchangeFormat(
            "coco-results",
            "COCO results on exported slices -> 3D pseudo labels",
            import_=import_coco_results,
            import_options=("dataset_path", "score_threshold", "close_mm", "open_mm", "keep_largest"),
        ),
        ExchangeFormat(
            "abdomenatlas",
            "AbdomenAtlas case folders (ct, original_label, pseudo_label, segmentations/)",
            export_abdomenatlas,
            (),
            import_abdomenatlas,
        ),
        ExchangeFormat(
            "monailabel",
            "MONAI Label datastore (labels/final, labels/original, datastore_v2.json)",
            export_monailabel,
            (),
            import_monailabel,
        ),
        ExchangeFormat(
            "image-folder",
            "2D PNG/TIFF images with label images of the same names",
            export_image_folder,
            ("value_map",),
            import_image_folder,
            ("labels_dir", "value_map", "source", "classes", "copy"),
            many_paths=True,
        ),
    )
}


def list_formats(direction: str) -> list[str]:
    """Names of the formats that can be exported (``"export"``) or imported (``"import"``)."""
    attribute = {"export": "export", "import": "import_"}[direction]
    return [name for name, row in FORMATS.items() if getattr(row, attribute) is not None]


def get_format(name: str, direction: str) -> ExchangeFormat:
    """The row of format ``name``; raises `InvalidInputError` naming the formats of ``direction``."""
    known = list_formats(direction)
    if name not in known:
        msg = f"unknown {direction} format {name!r}: expected one of {', '.join(known)}"
        raise InvalidInputError(msg)
    return FORMATS[name]
