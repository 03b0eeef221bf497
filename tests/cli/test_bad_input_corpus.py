"""Issue 18's bad-input corpus through the CLI: one ``error:`` line, no traceback, nothing written.

Each row is one probe of the issue (security holes, lost data, tracebacks, silent acceptances)
made from a small synthetic phantom and files crafted in ``tmp_path`` (real data only where the
probe needs it). `run_cli` lets any exception other than segloop's errors escape, so a traceback
fails the row. Concurrent probes (two corrections, merges or exports at once) live in
tests/loop/test_patches.py, tests/loop/test_corrections*.py and tests/exchange.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sqlite3
import struct
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.io import write_volume
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import SHARED_DATA

CLASSES = ",".join(PHANTOM_CLASSES)
CACHE_ROWS = 'INSERT INTO "file_hashes"'  # a read may remember an image's hash: not a change
_BASE: dict[str, Path] = {}


@dataclass
class Ctx:
    """A probe's scratch folder, a copy of the base project and the CLI."""

    tmp: Path
    base: Path
    files: Path
    run: Callable
    watch: Path | None = None  # the project that must come out unchanged

    def project(self, name: str = "proj") -> Path:
        root = self.tmp / name
        shutil.copytree(self.base, root)
        self.watch = self.watch or root
        return root

    def new_project(self, name: str, labels: str = CLASSES, *more: str) -> Path:
        root = self.tmp / name
        assert self.run("init", root, "--labels", labels, *more).code == 0
        self.watch = self.watch or root
        return root

    def sql(self, root: Path, statement: str) -> None:
        connection = sqlite3.connect(root / "segloop.db")
        with connection:
            connection.execute(statement)
        connection.close()

    def coco(self, root: Path) -> dict:
        """Export ``root`` as COCO slices; returns the dataset (written to tmp/coco/...)."""
        assert self.run("exchange", "export", root, self.tmp / "coco", "--format", "coco-slices").code == 0
        return json.loads((self.tmp / "coco" / "annotations" / "instances.json").read_text())


@dataclass(frozen=True)
class Row:
    name: str
    build: Callable[[Ctx], Sequence[object]]
    code: int = 1
    env: dict[str, str] = field(default_factory=dict)
    absent: Callable[[Ctx], Sequence[Path]] = lambda ctx: ()
    peak_mib: int | None = None  # most memory the command may allocate (traced by Python)
    says: str = ""  # the error line names this


@pytest.fixture
def ctx(tmp_path, tmp_path_factory, run_cli) -> Ctx:
    if "root" not in _BASE:
        folder = tmp_path_factory.mktemp("base")
        phantom = make_ct_phantom((24, 24, 12), seed=0)
        write_volume(phantom.image, folder / "p_0000.nii.gz")
        write_volume(phantom.labels, folder / "p.nii.gz")
        write_volume(make_ct_phantom((24, 24, 12), seed=1).labels, folder / "other.nii.gz")
        root = folder / "proj"
        assert run_cli("init", root, "--labels", CLASSES).code == 0
        added = run_cli(
            "add", root, folder / "p_0000.nii.gz", "--case-id", "p", "--label", folder / "p.nii.gz"
        )
        assert added.code == 0, added.err
        _BASE.update(root=root, files=folder)
    return Ctx(tmp_path, _BASE["root"], _BASE["files"], run_cli)


def snapshot(root: Path) -> tuple[list[str], list[str]]:
    """The project's database rows (hash cache aside) and files: equal when nothing was written."""
    connection = sqlite3.connect(root / "segloop.db")
    rows = [line for line in connection.iterdump() if not line.startswith(CACHE_ROWS)]
    connection.close()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "segloop.db" not in p.name)
    return rows, files


# --- crafted files ------------------------------------------------------------------------------


def image(ctx: Ctx, name: str = "p_0000.nii.gz") -> Path:
    target = ctx.tmp / name
    shutil.copyfile(ctx.files / "p_0000.nii.gz", target)
    return target


def nifti(ctx: Ctx, name: str, transform: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The phantom image with its voxels transformed (NaN, complex, RGB ...)."""
    source = nib.load(ctx.files / "p_0000.nii.gz")
    path = ctx.tmp / name
    nib.save(nib.Nifti1Image(transform(np.asarray(source.dataobj)), source.affine), path)
    return path


def nifti_header(ctx: Ctx, name: str, edits: dict[int, tuple[str, float]]) -> Path:
    """An uncompressed phantom NIfTI with raw header fields overwritten: offset -> (format, value)."""
    plain = nifti(ctx, "plain.nii", lambda a: a)
    data = bytearray(plain.read_bytes())
    for offset, (fmt, value) in edits.items():
        struct.pack_into(fmt, data, offset, value)
    path = ctx.tmp / name
    path.write_bytes(bytes(data))
    return path


def nhdr(ctx: Ctx, data_file: str) -> Path:
    """A detached header in tmp/h/ naming ``data_file``; tmp/secret.raw holds its 64 declared bytes."""
    (ctx.tmp / "secret.raw").write_bytes(bytes(range(64)))
    (ctx.tmp / "h").mkdir(exist_ok=True)
    path = ctx.tmp / "h" / "x.nhdr"
    path.write_text(
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: {data_file}\n"
    )
    return path


def gzip_nrrd(ctx: Ctx, sizes: str, inflated_bytes: int) -> Path:
    path = ctx.tmp / "bomb.nrrd"
    header = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: gzip\n\n".encode()
    path.write_bytes(header + gzip.compress(bytes(inflated_bytes), compresslevel=9))
    return path


def seg_nrrd(ctx: Ctx, root: Path, edit: Callable[[str], str]) -> Path:
    """The case's label exported as .seg.nrrd with its header text edited."""
    exported = ctx.tmp / "label.seg.nrrd"
    assert ctx.run("export", root, "p", exported).code == 0
    data = exported.read_bytes()
    end = data.index(b"\n\n")
    path = ctx.tmp / "edited.seg.nrrd"
    path.write_bytes(edit(data[:end].decode()).encode() + data[end:])
    return path


def set_segment(text: str, index: int, key: str, value: str) -> str:
    lines = [
        f"Segment{index}_{key}:={value}" if line.startswith(f"Segment{index}_{key}:=") else line
        for line in text.splitlines()
    ]
    return "\n".join(lines)


def coco_results(ctx: Ctx, edit_image: dict | None = None, segmentation: object = None) -> list[Path]:
    """A COCO results file (and its dataset) for the base project's first exported slice."""
    dataset = ctx.coco(ctx.project())
    first = dataset["images"][0]
    first["segloop"].update(edit_image or {})
    height, width = first["height"], first["width"]
    mask = segmentation or {"size": [height, width], "counts": [0, 10, height * width - 10]}
    results = [{"image_id": first["id"], "category_id": 1, "score": 0.9, "segmentation": mask}]
    (ctx.tmp / "dataset.json").write_text(json.dumps(dataset))
    (ctx.tmp / "results.json").write_text(json.dumps(results))
    return [ctx.tmp / "results.json", "--format", "coco-results", "--dataset", ctx.tmp / "dataset.json"]


def coco_import(ctx: Ctx, edit_image: dict | None = None, segmentation: object = None) -> list[object]:
    paths = coco_results(ctx, edit_image, segmentation)
    return ["exchange", "import", ctx.watch, *paths]


def toml_url(ctx: Ctx, url: str) -> list[object]:
    root = ctx.project()
    config = root / "segloop.toml"
    text = config.read_text()
    line = f'url = "{url}"'
    if "[database]" in text:  # projects of older versions hold an empty url
        config.write_text(re.sub(r'(?m)^url = ".*"$', lambda _: line, text, count=1))
    else:
        config.write_text(f"{text}\n[database]\n{line}\n")
    return ["add", root, image(ctx, "q_0000.nii.gz"), "--case-id", "q"]


def add_as(ctx: Ctx, path: Path, case_id: str = "q") -> list[object]:
    return ["add", ctx.project(), path, "--case-id", case_id]


def tampered_export(fmt: str) -> Callable[[Ctx], list[object]]:
    def build(ctx: Ctx) -> list[object]:
        root = ctx.project()
        ctx.sql(root, "UPDATE cases SET case_id = '../../../../ABS'")
        return ["exchange", "export", root, ctx.tmp / "out" / "x", "--format", fmt]

    return build


def written_out(ctx: Ctx) -> list[Path]:
    """Files under tmp/out (an empty parent folder may remain: io.atomic creates it first)."""
    return [p for p in (ctx.tmp / "out").rglob("*") if p.is_file()]


def no_escape(ctx: Ctx) -> list[Path]:
    return [*ctx.tmp.parent.rglob("*ABS*"), *written_out(ctx)]


def dotdot_png(ctx: Ctx) -> list[object]:
    root = ctx.new_project("micro", "cell", "--modality", "microscopy")
    (ctx.tmp / "pngs").mkdir()
    from PIL import Image

    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(
        ctx.tmp / "pngs" / "...png", format="PNG"
    )
    return ["exchange", "import", root, ctx.tmp / "pngs", "--format", "image-folder"]


def other_project_url(ctx: Ctx) -> list[object]:
    other = ctx.project("other")
    return toml_url(ctx, f"sqlite:///{other / 'segloop.db'}")


def replaced_object(ctx: Ctx) -> list[object]:
    root = ctx.project()
    (stored,) = (root / "objects").rglob("*.nii.gz")
    shutil.copyfile(ctx.files / "other.nii.gz", stored)
    return ["export", root, "p", ctx.tmp / "out.nii.gz"]


def replaced_image(ctx: Ctx) -> list[object]:
    root = ctx.new_project("own")
    path = image(ctx)
    assert ctx.run("add", root, path, "--case-id", "p", "--label", ctx.files / "p.nii.gz").code == 0
    path.unlink()
    write_volume(make_ct_phantom((24, 24, 12), seed=3).image, path)
    return ["exchange", "export", root, ctx.tmp / "out", "--format", "nnunet"]


def truncated_dicom(ctx: Ctx) -> list[object]:
    series = SHARED_DATA / "totalsegmentator-examples" / "ct_dicom_series" / "dicom"
    if not series.is_dir():
        pytest.skip(f"real data {series} is absent")
    folder = shutil.copytree(series, ctx.tmp / "dicom")
    victim = sorted(folder.iterdir())[len(list(folder.iterdir())) // 2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return ["info", folder]


def junk_checkpoint(ctx: Ctx) -> list[object]:
    (ctx.tmp / "junk.pt").write_bytes(np.random.default_rng(0).bytes(1000))
    return ["train", ctx.project(), "--init-weights", ctx.tmp / "junk.pt", "--epochs", "1", "--device", "cpu"]


def corrupt_db(ctx: Ctx) -> list[object]:
    root = ctx.project()
    (root / "segloop.db").write_bytes(np.random.default_rng(0).bytes(5000))
    for journal in ("segloop.db-wal", "segloop.db-shm"):  # else SQLite may read page 1 from the WAL
        (root / journal).unlink(missing_ok=True)
    ctx.watch = None
    return ["status", root]


def deleted_db(ctx: Ctx) -> list[object]:
    root = ctx.project()
    (root / "segloop.db").unlink()
    ctx.watch = None
    return ["status", root]


def nnunet_without_images(ctx: Ctx) -> list[object]:
    root = ctx.project()
    assert ctx.run("exchange", "export", root, ctx.tmp / "nn", "--format", "nnunet").code == 0
    (dataset,) = (ctx.tmp / "nn").glob("Dataset*")
    document = json.loads((dataset / "dataset.json").read_text())
    (dataset / "dataset.json").write_text(json.dumps({**document, "file_ending": ".mha"}))
    return ["exchange", "import", root, dataset, "--format", "nnunet"]


def bytes_file(ctx: Ctx, name: str, data: bytes) -> Path:
    (ctx.tmp / name).write_bytes(data)
    return ctx.tmp / name


def empty_project(ctx: Ctx) -> list[object]:
    return ["next", ctx.new_project("empty")]


FLOAT32 = np.float32
ROWS = [
    # Security (1): case ids become paths
    Row(
        "1 add --case-id absolute",
        lambda c: add_as(c, image(c), str(c.tmp / "elsewhere" / "ABS")),
        absent=lambda c: [c.tmp / "elsewhere"],
    ),
    Row("1 add --case-id ../../x", lambda c: add_as(c, image(c), "../../x")),
    *(
        Row(f"1 export {fmt} of a case id ../../../../ABS", tampered_export(fmt), absent=no_escape)
        for fmt in ("nnunet", "abdomenatlas", "coco-slices", "monailabel")
    ),
    Row("1 image-folder import of ...png (case '..')", dotdot_png),
    # Security (2): detached NRRD data files
    Row("2 .nhdr data file ../secret.raw", lambda c: ["info", nhdr(c, "../secret.raw")]),
    Row("2 .nhdr data file /abs/secret.raw (add)", lambda c: add_as(c, nhdr(c, str(c.tmp / "secret.raw")))),
    # Security (3): [database] url in segloop.toml
    Row("3 toml url of another project", other_project_url),
    Row(
        "3 toml url of a missing path",
        lambda c: toml_url(c, f"sqlite:///{c.tmp / 'nowhere' / 'x.db'}"),
        absent=lambda c: [c.tmp / "nowhere"],
    ),
    Row("3 toml url sqlite:// (in memory)", lambda c: toml_url(c, "sqlite://")),
    Row(
        "3 unparseable database URL",
        lambda c: ["status", c.project()],
        env={"SEGLOOP_DATABASE_URL": "not a url"},
    ),
    Row(
        "3 database driver missing",
        lambda c: ["status", c.project()],
        env={"SEGLOOP_DATABASE_URL": "postgresql://u:p@localhost:1/x"},
    ),
    # Security (4): bombs
    Row(
        "4 COCO RLE size 100000x100000",
        lambda c: coco_import(c, segmentation={"size": [100000, 100000], "counts": [0, 10**10]}),
    ),
    Row(
        "4 gzip NRRD declaring more than the size cap",
        lambda c: ["info", gzip_nrrd(c, "128 128 128", 128**3)],
        env={"SEGLOOP_MAX_IMAGE_BYTES": str(1 << 20)},
    ),
    Row(
        "4 gzip NRRD inflating 256 KiB declared to 64 MiB",
        lambda c: ["info", gzip_nrrd(c, "64 64 64", 64 << 20)],
        peak_mib=16,
    ),
    # Data lost or corrupted
    Row("8 deleted segloop.db: status", deleted_db, absent=lambda c: [c.tmp / "proj" / "segloop.db"]),
    Row(
        "9 label object overwritten with another NIfTI",
        replaced_object,
        absent=lambda c: [c.tmp / "out.nii.gz"],
    ),
    Row("9 in-place image replaced by another patient", replaced_image, absent=written_out),
    Row(
        "10 .seg.nrrd with two segments of one name",
        lambda c: [
            "correct",
            c.project(),
            "p",
            "--force",
            "--label",
            seg_nrrd(c, c.project("src"), lambda t: set_segment(t, 1, "Name", "liver")),
        ],
    ),
    Row(
        "10 .seg.nrrd segment whose value matches no voxel",
        lambda c: [
            "correct",
            c.project(),
            "p",
            "--force",
            "--label",
            seg_nrrd(c, c.project("src"), lambda t: set_segment(t, 0, "LabelValue", "42")),
        ],
    ),
    # Tracebacks
    Row("T truncated DICOM slice", truncated_dicom),
    Row("T COCO provenance shape 100000^3", lambda c: coco_import(c, {"shape": [100000] * 3})),
    Row("T COCO provenance slice 99999", lambda c: coco_import(c, {"slice": 99999})),
    Row("T COCO provenance axis 7", lambda c: coco_import(c, {"axis": 7})),
    Row(
        "T COCO huge RLE counts",
        lambda c: coco_import(c, segmentation={"size": [512, 512], "counts": [0, 10**15]}),
    ),
    Row("T NIfTI dim[0]=9", lambda c: add_as(c, nifti_header(c, "d.nii", {40: ("<h", 9)}))),
    Row(
        "T NIfTI scl_slope=1e30",
        lambda c: add_as(c, nifti_header(c, "s.nii", {112: ("<f", 1e30), 116: ("<f", 0)})),
    ),
    Row("T NIfTI dim[1]=0", lambda c: add_as(c, nifti_header(c, "z.nii", {42: ("<h", 0)}))),
    Row(
        "T RGB NIfTI (then segment threshold)",
        lambda c: add_as(
            c, nifti(c, "rgb.nii.gz", lambda a: np.zeros(a.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")]))
        ),
    ),
    Row("T 300-character case id", lambda c: add_as(c, image(c), "a" * 300)),
    Row("T corrupt database", corrupt_db),
    Row("T train --init-weights on a non-checkpoint", junk_checkpoint),
    # Accepted silently
    Row(
        "S NaN image",
        lambda c: add_as(c, nifti(c, "nan.nii.gz", lambda a: np.where(a > 100, np.nan, a).astype(FLOAT32))),
    ),
    Row(
        "S inf image",
        lambda c: add_as(c, nifti(c, "inf.nii.gz", lambda a: np.where(a > 100, np.inf, a).astype(FLOAT32))),
    ),
    Row("S complex image", lambda c: add_as(c, nifti(c, "cx.nii.gz", lambda a: a.astype(np.complex64)))),
    *(
        Row(
            f"S init --window {w}",
            lambda c, w=w: ["init", c.tmp / "w", "--labels", "a", "--window", w],
            code=2,
            absent=lambda c: [c.tmp / "w"],
        )
        for w in ("nan,40", "inf,40", "1e400,0")
    ),
    *(
        Row(f"S case id {case_id!r}", lambda c, i=case_id: add_as(c, image(c), i))
        for case_id in ("", ".", "a\nb")
    ),
    Row("S COCO slice -1", lambda c: coco_import(c, {"slice": -1})),
    Row("S COCO polygon 1e308", lambda c: coco_import(c, segmentation=[[1e308, 0, 10, 10, 0, 10]])),
    Row(
        "S COCO polygon NaN",
        lambda c: coco_import(c, segmentation=[[float("nan"), 0, 10, 10, 0, 10]]),
        says="1 NaN or infinite values",
    ),
    Row("S next on an empty project", empty_project),
    # Found again (H6): not in the list
    *(
        Row(
            f"X coco-slices --long-side {side}",
            lambda c, v=side: [
                "exchange",
                "export",
                c.project(),
                c.tmp / "out",
                "--format",
                "coco-slices",
                "--long-side",
                v,
            ],
            absent=written_out,
            says="longer side",
        )
        for side in ("0", "20000")
    ),
    Row("X nnU-Net dataset whose file_ending matches no image", nnunet_without_images, says="no image"),
    *(
        Row(
            f"X segment postprocess --{option} {value}",
            lambda c, o=option, v=value: ["segment", c.project(), "p", "postprocess", f"--{o}", v],
            says="finite",
        )
        for option, value in (("close-mm", "nan"), ("open-mm", "inf"))
    ),
    *(
        Row(
            f"X init --labels-file of non-UTF-8 bytes ({suffix})",
            lambda c, s=suffix: [
                "init",
                c.tmp / "w",
                "--labels-file",
                bytes_file(c, f"names{s}", b"\xff\xfe\x00"),
            ],
            absent=lambda c: [c.tmp / "w"],
            says="UTF-8",
        )
        for suffix in (".txt", ".json")
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input_is_one_error_line_and_writes_nothing(row: Row, ctx: Ctx, monkeypatch) -> None:
    args = row.build(ctx)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    before = snapshot(ctx.watch) if ctx.watch else None
    if row.peak_mib:
        tracemalloc.start()
    result = ctx.run(*args)
    if row.peak_mib:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < row.peak_mib << 20, f"peak {peak / 2**20:.0f} MiB"
    assert result.code == row.code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    if row.code == 1:
        assert len(lines) == 1 and lines[0].startswith("error:") and row.says in lines[0], result.err
    else:
        assert lines[0].startswith("Usage:") and "Invalid value" in result.err, result.err
    if before is not None:
        assert snapshot(ctx.watch) == before
    assert not [str(path) for path in row.absent(ctx) if path.exists()]


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "in place"])
def test_add_of_a_detached_nrrd_named_from_a_relative_path(ctx: Ctx, monkeypatch, copy: bool) -> None:
    """Item 7: a .nhdr named relative to the working folder is added (its copy holds the data file).

    The header's data files resolve below its resolved folder; naming them relative to the folder
    as written was a traceback (ValueError) when the path was relative.
    """
    (ctx.tmp / "src").mkdir()
    values = np.arange(16 * 16 * 8, dtype=np.int16) % 200
    (ctx.tmp / "src" / "x.raw").write_bytes(values.tobytes())
    (ctx.tmp / "src" / "x.nhdr").write_text(
        "NRRD0004\ntype: int16\ndimension: 3\nsizes: 16 16 8\nspace: left-posterior-superior\n"
        "space directions: (1,0,0) (0,1,0) (0,0,2)\nendian: little\nencoding: raw\ndata file: x.raw\n"
    )
    root = ctx.new_project("copies")
    monkeypatch.chdir(ctx.tmp)
    added = ctx.run("add", "copies", Path("src") / "x.nhdr", "--case-id", "x", *(["--copy"] if copy else []))
    assert added.code == 0, added.err
    if copy:
        shutil.rmtree(ctx.tmp / "src")
        assert sorted(p.name for p in (root / "images").rglob("x.*")) == ["x.nhdr", "x.raw"]
    checked = ctx.run("fsck", root)
    assert checked.code == 0 and "no problems" in checked.out, checked.out


def test_info_names_rgb_voxels_instead_of_failing(ctx: Ctx) -> None:
    """`segloop info` describes any file it reads, structured (RGB24) voxels included."""
    path = nifti(ctx, "rgb.nii.gz", lambda a: np.zeros(a.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")]))
    result = ctx.run("info", path)
    assert result.code == 0 and "fields R, G, B" in result.out, result.err
