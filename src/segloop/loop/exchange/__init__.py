"""Use cases of `segloop exchange`: a project's cases and labels in other tools' layouts, and back.

Exports write a folder atomically (a temporary sibling renamed at the end: a failed export leaves
nothing). Imports read and check *every* file before the project changes: label files are staged in
the object store and published together, then the rows are added, so bad input (a label on another
grid, values or class names the schema lacks, a COCO result pointing nowhere) leaves the project
as it was. A label version identical to one the case already has (same content, source and
classes) is not added twice, so importing what was exported is harmless.

Provenance: every imported version records the tool, the source file and its SHA-256 and the
parameters (score threshold, post-processing radii, value maps).
"""

from segloop.loop.exchange.abdomenatlas import export_abdomenatlas, import_abdomenatlas
from segloop.loop.exchange.coco import export_coco_slices, import_coco_results
from segloop.loop.exchange.common import ExportReport, ImportReport
from segloop.loop.exchange.image_folder import export_image_folder, import_image_folder
from segloop.loop.exchange.monailabel import export_monailabel, import_monailabel
from segloop.loop.exchange.nnunet import export_nnunet, import_nnunet_dataset, import_nnunet_predictions

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ExportReport",
    "ImportReport",
    "export_abdomenatlas",
    "export_coco_slices",
    "export_image_folder",
    "export_monailabel",
    "export_nnunet",
    "import_abdomenatlas",
    "import_coco_results",
    "import_image_folder",
    "import_monailabel",
    "import_nnunet_dataset",
    "import_nnunet_predictions",
]

EXPORT_FORMATS = ("nnunet", "coco-slices", "abdomenatlas", "monailabel", "image-folder")
IMPORT_FORMATS = (
    "nnunet",
    "nnunet-predictions",
    "coco-results",
    "abdomenatlas",
    "monailabel",
    "image-folder",
)
