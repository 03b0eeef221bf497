"""The use cases every face (CLI, server, notebooks, the simulated annotator) calls.

Arrays and typed records in, typed records out; files are read and written by the faces, except
where writing files *is* the use case (exports for other tools, patches to correct elsewhere).
Errors come by kind (`segloop.errors`): not found, conflict, invalid input.

| module | use cases |
| --- | --- |
| `cases` | `init_project`, `import_cases` (all or none), `summarize_project`, `list_case_page` (paged) |
| `imports` | the one import pipeline (`ImportBatch`, `run_import`, `ImportReport`) every import uses |
| `labels` | effective labels (assembly), `select_versions` (the sources a consumer gets) |
| `tools` | `run(project, case, request)`: `Threshold`, `Grow`, `Interpolate`, ...; `TOOLS` |
| `corrections` | `apply(project, case, Corrections(add, remove, ignore), parent=...)`, `apply_label` |
| `patches` | `extract_patches`, `merge_patch_corrections` (arrays), `merge_patches` (folders) |
| `training` | `train_config`, `train_project`, `resume_training`, `predict_cases` |
| `predict` | `predict_batch`: one task per case, local or on Dask, recorded in batches, once per model |
| `evaluation` | `evaluate_model`, `summarize_evaluations` |
| `ranking` | `rank_cases(strategy=...)`, `STRATEGIES` (`uncertainty`, `gain-per-cost`, `random`, ...) |
| `rounds` | `run_round`: train → predict → evaluate → rank, recorded as round N |
| `jobs` | `run_job`: long work as a job row with typed `Progress` events |
| `tool_exports` | `export_for_tool` (3D Slicer, ITK-SNAP, MITK) |
| `exchange` | `FORMATS`: nnU-Net, COCO, AbdomenAtlas, MONAI Label, image folders |
| `simulate`, `demo` | the simulated annotator and the whole loop played with it |
| `strokes` | `draw_from_reference`: a person's slices or scribbles made from a reference label |
| `report` | the HTML report of every round |

Modules load on first use (``from segloop.loop import tools``), so ``import segloop.loop`` is cheap.
"""

__all__ = [
    "cases",
    "corrections",
    "demo",
    "evaluation",
    "exchange",
    "imports",
    "jobs",
    "labels",
    "patches",
    "predict",
    "ranking",
    "report",
    "rounds",
    "simulate",
    "strokes",
    "tool_exports",
    "tools",
    "training",
]
