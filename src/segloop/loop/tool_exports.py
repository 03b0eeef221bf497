"""Exports of a case for 3D Slicer, ITK-SNAP and MITK, to be corrected there and brought back.

`export_for_tool` writes what each tool opens directly (names and colours of the schema's classes
plus *ignore*), an editable copy of the current label, an empty ``corrections/`` folder and a
manifest (``segloop-export.json``) recording the label it exported, so that `segloop correct`
refuses work made from an export that has since gone stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segloop.core.labels import LabelSchema
from segloop.core.volume import Volume
from segloop.errors import ConflictError, InvalidInputError
from segloop.io import write_volume
from segloop.io.atomic import atomic_directory
from segloop.loop.corrections import EXPORT_MANIFEST, choose_parent, read_current_label
from segloop.loop.labels import schema_segments
from segloop.loop.tools import read_case_image
from segloop.store import Project, compute_label_key

__all__ = ["EXPORT_TOOLS", "export_for_tool", "itksnap_label_description", "mitk_label_stack"]

EXPORT_TOOLS = ("slicer", "itksnap", "mitk")
_IGNORE_COLOR = (128, 128, 128)


def itksnap_label_description(schema: LabelSchema) -> str:
    """ITK-SNAP's label description file (``Segmentation > Import Label Descriptions``).

    One line per label: ``IDX R G B A VIS MSH "LABEL"`` (colours 0-255, opacity 0-1); 0 is
    ITK-SNAP's "Clear Label", the classes follow, then *ignore* (grey).

    Examples:
        >>> print(itksnap_label_description(LabelSchema.from_names(["liver"])).splitlines()[-1])
            2   128  128  128        1  1  1    "ignore"
    """
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format: ",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields: ",
        "#    IDX:   Zero-based index ",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    IDX:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description ",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    rows = [(c.index, c.color, c.name) for c in schema.classes]
    rows.append((schema.ignore_index, _IGNORE_COLOR, "ignore"))
    for index, (r, g, b), name in rows:
        lines.append(f'{index:5d}   {r:3d}  {g:3d}  {b:3d}        1  1  1    "{name}"')
    return "\n".join(lines) + "\n"


def mitk_label_stack(schema: LabelSchema, group_file: str) -> dict[str, Any]:
    """An MITK multi-label segmentation stack (``.mitklabel.json``, version 3) over one label map.

    Examples:
        >>> stack = mitk_label_stack(LabelSchema.from_names(["liver"]), "corrected.nrrd")
        >>> stack["type"], [label["name"] for label in stack["groups"][0]["labels"]]
        ('org.mitk.multilabel.segmentation.stack', ['liver', 'ignore'])
    """
    labels = [{"name": c.name, "value": c.index, "color": list(c.color)} for c in schema.classes]
    labels.append({"name": "ignore", "value": schema.ignore_index, "color": list(_IGNORE_COLOR)})
    return {
        "version": 3,
        "type": "org.mitk.multilabel.segmentation.stack",
        "groups": [{"name": "segloop", "_file": f"./{group_file}", "labels": labels}],
    }


def _slicer_segments(schema: LabelSchema) -> list[dict[str, Any]]:
    segments = schema_segments(schema)
    segments.append(
        {
            "id": "ignore",
            "name": "ignore",
            "color": _IGNORE_COLOR,
            "label_value": schema.ignore_index,
            "layer": 0,
        }
    )
    return segments


_README = """\
segloop export of case {case} for {tool_name} (label version {parent}).

  {image}        the image
  {label}        the current label (reference; do not edit)
  {corrected}    a copy to edit{extra}
  corrections/   put add / remove / ignore masks here instead (on the image's grid):
                 Add_<class>1.nrrd, Remove1.nrrd (or Remove_<class>1.nrrd), Ignore1.nrrd ...

Then bring the work back, as one revised label version:

  segloop correct {project} {case} --label {out}/{corrected}
  segloop correct {project} {case} --corrections-dir {out}/corrections [--class NAME]

Classes: {classes}; ignore = {ignore} (do not learn here).
"""


def export_for_tool(
    project: Project, case_id: str, tool: str, out_dir: Path, *, overwrite: bool = False
) -> list[Path]:
    """Write a case for 3D Slicer, ITK-SNAP or MITK: image, label, an editable copy, a corrections folder.

    Layout of ``out_dir`` (written as a whole, atomically):

    - ``slicer``: ``image.nrrd``, ``label.seg.nrrd`` and ``corrected.seg.nrrd`` (segments named
      and coloured as the schema, plus ``ignore``);
    - ``itksnap``: ``image.nii.gz``, ``label.nii.gz``, ``corrected.nii.gz`` and ``labels.txt``
      (ITK-SNAP's label description file: names and colours);
    - ``mitk``: ``image.nrrd``, ``label.nrrd``, ``corrected.nrrd`` and
      ``corrected.mitklabel.json`` (MITK's multi-label stack: opens ``corrected.nrrd`` as a
      segmentation with names and colours);
    - all: ``corrections/`` (empty, for ``Add*``/``Remove*``/``Ignore*`` masks), ``README.txt``
      and ``segloop-export.json`` (case, label version ids, the case's newest version id: the
      ``parent`` of a correction made from it, SHA-256 of the exported label).

    Returns:
        The files written (under ``out_dir``).

    Raises:
        InvalidInputError: an unknown tool.
        ConflictError: ``out_dir`` exists (without ``overwrite``), or holds corrections (even with
            ``overwrite``: a re-export never deletes someone's masks).
    """
    if tool not in EXPORT_TOOLS:
        msg = f"unknown tool {tool!r}: expected one of {', '.join(EXPORT_TOOLS)}"
        raise InvalidInputError(msg)
    schema = project.config.schema
    case = project.get_case(case_id)
    image = read_case_image(project, case)
    if image.array.ndim == 4:
        image = Volume(image.array[0], image.affine)
    out_dir = Path(out_dir)
    pending = sorted((out_dir / "corrections").glob("*")) if (out_dir / "corrections").is_dir() else []
    if overwrite and pending:
        msg = (
            f"{out_dir} holds corrections ({', '.join(p.name for p in pending[:3])}): bring them back"
            " first or move them; replacing an export never deletes someone's work"
        )
        raise ConflictError(msg)
    versions, assembly, labels = read_current_label(project, case)
    labels = assembly.editable_labels if assembly is not None else labels  # no auto-ignore to save back
    parent = choose_parent(versions, assembly)
    suffix = {"slicer": ".seg.nrrd", "itksnap": ".nii.gz", "mitk": ".nrrd"}[tool]
    image_name = "image.nii.gz" if tool == "itksnap" else "image.nrrd"
    meta = {"segments": _slicer_segments(schema)} if tool == "slicer" else {}
    label = Volume(labels, case.affine, meta)
    extra = {
        "itksnap": "\n  labels.txt     names and colours (Segmentation > Import Label Descriptions)",
        "mitk": "\n  corrected.mitklabel.json  opens corrected.nrrd as a named MITK segmentation",
    }
    manifest = {
        "case": case_id,
        "tool": tool,
        "parent_version_id": parent.id if parent else None,
        "version_ids": [v.id for v in versions],
        "head_version_id": versions[-1].id if versions else None,
        "label_sha256": compute_label_key(labels),
        "image": image_name,
        "label": f"label{suffix}",
        "corrected": f"corrected{suffix}",
        "corrections": "corrections",
    }
    with atomic_directory(out_dir, overwrite=overwrite) as folder:
        write_volume(image, folder / image_name)
        write_volume(label, folder / f"label{suffix}")
        write_volume(label, folder / f"corrected{suffix}")
        (folder / "corrections").mkdir()
        if tool == "itksnap":
            (folder / "labels.txt").write_text(itksnap_label_description(schema), encoding="utf-8")
        if tool == "mitk":
            stack = mitk_label_stack(schema, f"corrected{suffix}")
            (folder / "corrected.mitklabel.json").write_text(json.dumps(stack, indent=2), encoding="utf-8")
        (folder / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        readme = _README.format(
            case=case_id,
            tool_name={"slicer": "3D Slicer", "itksnap": "ITK-SNAP", "mitk": "MITK"}[tool],
            parent=manifest["parent_version_id"],
            image=image_name.ljust(13),
            label=f"label{suffix}".ljust(13),
            corrected=f"corrected{suffix}",
            extra=extra.get(tool, ""),
            project=project.root,
            out=out_dir,
            classes=", ".join(f"{c.index} {c.name}" for c in schema.classes),
            ignore=schema.ignore_index,
        )
        (folder / "README.txt").write_text(readme, encoding="utf-8")
        written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return [out_dir / p for p in written]
