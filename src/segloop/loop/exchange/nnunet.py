"""nnU-Net v2 raw datasets and prediction folders."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from segloop.core.volume import Volume
from segloop.errors import GeometryMismatchError, InvalidInputError, NotFoundError
from segloop.exchange import nnunet
from segloop.exchange.values import schema_values_of_names
from segloop.io.atomic import atomic_directory
from segloop.loop.exchange.common import (
    DEFAULT_SOURCES,
    ExportReport,
    ImportBatch,
    ImportReport,
    classes_of_mapping,
    effective_labels,
    file_params,
    read_channels,
    read_labels_on_grid,
    run_import,
    select_cases,
    sources_record,
)
from segloop.store import Project

__all__ = ["export_nnunet", "import_nnunet_dataset", "import_nnunet_predictions"]


def export_nnunet(
    project: Project,
    out_dir: Path,
    *,
    dataset_id: int,
    name: str | None = None,
    case_ids: Sequence[str] | None = None,
    sources: Collection[str] = DEFAULT_SOURCES,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``out_dir/DatasetXXX_<name>`` as an nnU-Net v2 raw dataset.

    Cases labelled by versions of ``sources`` (an effective label that is not all *ignore*) go to
    ``imagesTr``/``labelsTr`` with *ignore* where nobody annotated (declared as ``"ignore"``, the
    highest value, when some label holds it); the others go to ``imagesTs``. By default only
    labels people made count (`DEFAULT_SOURCES`): a model's predictions are not training data
    unless ``pseudo`` is among ``sources``. Channels become ``_0000``, ``_0001``, ...; the
    project's modality names them (``CT`` selects nnU-Net's CT normalisation). ``dataset.json``
    records under ``"segloop"`` the sources and, per training case, the versions used.
    """
    started = time.perf_counter()
    schema = project.config.schema
    folder = Path(out_dir) / nnunet.dataset_folder_name(dataset_id, name or project.config.name)
    cases = select_cases(project, case_ids)
    n_training, n_test, with_ignore, channel_count = 0, 0, False, None
    provenance = {}
    with atomic_directory(folder, overwrite=overwrite) as temporary:
        for case in cases:
            channels = read_channels(project, case)
            if channel_count is not None and len(channels) != channel_count:
                msg = f"case {case.case_id!r} has {len(channels)} channels, others {channel_count}"
                raise GeometryMismatchError(msg)
            channel_count = len(channels)
            assembly = effective_labels(project, case, sources)
            labels = None
            if assembly is not None and not assembly.ignore_mask.all():
                labels = Volume(assembly.labels, case.affine)
                with_ignore |= bool(assembly.ignore_mask.any())
                n_training += 1
                provenance[case.case_id] = sources_record(project, case, sources)
            else:
                n_test += 1
            nnunet.write_case(temporary, case.case_id, channels, labels)
        modality = project.config.modality
        document = nnunet.make_dataset_json(
            schema,
            channel_names=[
                modality if modality == "CT" else f"{modality}_{i}" for i in range(channel_count or 1)
            ],
            num_training=n_training,
            with_ignore=with_ignore,
            name=project.config.name,
            description=f"exported by segloop from project {project.config.name}",
        )
        document["segloop"] = {"sources": sorted(str(s) for s in sources), "cases": provenance}
        (temporary / nnunet.DATASET_JSON).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return ExportReport(
        folder,
        [c.case_id for c in cases],
        {"training cases": n_training, "cases in imagesTs": n_test, "with ignore label": int(with_ignore)},
        time.perf_counter() - started,
    )


def _dataset_mapping(
    dataset: nnunet.NnunetDataset | None, project: Project, where: Path
) -> Mapping[int, int] | None:
    if dataset is None:
        return None
    try:
        return schema_values_of_names(dataset.labels, project.config.schema)
    except InvalidInputError as error:
        msg = f"{where}: its labels {dataset.labels} do not match the project's schema: {error}"
        raise type(error)(msg) from error


def import_nnunet_predictions(project: Project, folder: Path, *, author: str) -> ImportReport:
    """Add each ``<case>.nii.gz`` of an nnU-Net prediction folder as a ``pseudo`` version.

    The folder's ``dataset.json`` (nnU-Net copies it there) maps values to class names, which must
    be in the schema; without it the values are taken as schema values. Every file must name a
    case of the project.
    """
    folder = Path(folder)
    json_path = folder / nnunet.DATASET_JSON
    dataset = nnunet.read_dataset_json(json_path) if json_path.is_file() else None
    mapping = _dataset_mapping(dataset, project, json_path)
    files = nnunet.list_label_files(folder, dataset.file_ending if dataset else nnunet.FILE_ENDING)
    if not files:
        msg = f"{folder} holds no prediction files <case>{nnunet.FILE_ENDING}"
        raise NotFoundError(msg)
    unknown = sorted(set(files) - set(project.list_case_ids()))
    if unknown:
        msg = f"predictions of cases the project lacks: {', '.join(unknown[:5])} (nothing was added)"
        raise NotFoundError(msg)
    classes = classes_of_mapping(mapping, project)

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        for case_id, path in files.items():
            shape, affine = batch.grid_of(case_id)
            labels = read_labels_on_grid(path, project, shape, affine, mapping)
            batch.add_label(
                case_id, labels, source="pseudo", classes=classes, tool="nnU-Net", params=file_params(path)
            )

    return run_import(project, author, "nnunet-predictions", fill)


def import_nnunet_dataset(
    project: Project, dataset_dir: Path, *, author: str, source: str = "original"
) -> ImportReport:
    """Add the cases of an nnU-Net raw dataset: ``imagesTr`` with ``labelsTr``, and ``imagesTs``.

    Channels ``_0000``, ``_0001``, ... become the case's channels; the labels' names
    (``dataset.json``) must be in the schema, and ``ignore`` becomes the schema's ignore value.
    """
    dataset_dir = Path(dataset_dir)
    json_path = dataset_dir / nnunet.DATASET_JSON
    dataset = nnunet.read_dataset_json(json_path)
    mapping = _dataset_mapping(dataset, project, json_path)
    training = nnunet.list_raw_cases(dataset_dir / "imagesTr", dataset.file_ending)
    test_dir = dataset_dir / "imagesTs"
    test = nnunet.list_raw_cases(test_dir, dataset.file_ending) if test_dir.is_dir() else {}
    if not training and not test:
        msg = f"{dataset_dir}: no image <case>_0000{dataset.file_ending} in imagesTr or imagesTs"
        raise NotFoundError(msg)
    label_files = nnunet.list_label_files(dataset_dir / "labelsTr", dataset.file_ending)
    missing = sorted(set(training) - set(label_files))
    if missing:
        msg = f"{dataset_dir}/labelsTr lacks labels of {', '.join(missing[:5])}: nnU-Net needs one per case"
        raise NotFoundError(msg)
    classes = classes_of_mapping(mapping, project)

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        for case_id, channels in (training | test).items():
            batch.add_case(case_id, [channels[c] for c in sorted(channels)])
            if case_id in training:
                shape, affine = batch.grid_of(case_id)
                path = label_files[case_id]
                labels = read_labels_on_grid(path, project, shape, affine, mapping)
                batch.add_label(
                    case_id,
                    labels,
                    source=source,
                    classes=classes,
                    tool="nnU-Net raw",
                    params=file_params(path),
                )

    return run_import(project, author, "nnunet", fill)
