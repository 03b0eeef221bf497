"""`segloop train`'s per-run options (seed 004), pseudo-label policies, the live preview, and
`segloop correct --reviewed-slices/--reviewed-box`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.cli.main import PSEUDO_CHOICES, with_flag_values
from segloop.core import Volume
from segloop.errors import InvalidInputError
from segloop.io import write_volume
from segloop.loop.report import training_preview_path
from segloop.loop.training import PSEUDO_POLICIES
from segloop.store import Project
from tests.loop.conftest import phantom_project

TINY = (
    "--features",
    "8,16",
    "--batch-size",
    "2",
    "--patch-size",
    "16,16",
    "--epochs",
    "1",
    "--device",
    "cpu",
)


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=4, n_labeled=4)


@pytest.fixture
def captured(monkeypatch):
    """The arguments `segloop train` passes to `train_project` (nothing is trained)."""
    import segloop.loop.training

    calls = []

    def fake(project, config, **kwargs):
        calls.append({"config": config, **kwargs})
        raise SystemExit(0)

    monkeypatch.setattr(segloop.loop.training, "train_project", fake)
    return calls


def test_the_cli_lists_the_pseudo_policies_of_the_loop():
    assert PSEUDO_CHOICES == PSEUDO_POLICIES


@pytest.mark.parametrize(
    ("args", "policy", "entropy"),
    [
        ((), False, None),
        (("--include-pseudo",), "all", None),  # the old flag, last
        (("--include-pseudo", "--minutes", "1"), "all", None),  # the old flag, then an option
        (("--include-pseudo", "confident", "--pseudo-entropy", "0.2"), "confident", 0.2),
        (("--include-pseudo=none",), "none", None),
    ],
)
def test_include_pseudo_takes_a_policy_or_stands_alone(run_cli, project, captured, args, policy, entropy):
    assert run_cli("train", project.root, *args).code == 0
    [call] = captured
    assert (call["include_pseudo"], call["pseudo_entropy"]) == (policy, entropy)


def test_a_bare_include_pseudo_before_the_project_is_the_old_flag():
    assert with_flag_values(["train", "--include-pseudo", "p"]) == ["train", "--include-pseudo=all", "p"]
    assert with_flag_values(["x", "--", "--include-pseudo"]) == ["x", "--", "--include-pseudo"]


@pytest.mark.slow
def test_seed_004_options_reach_the_run_and_the_preview_the_report(run_cli, project):
    result = run_cli(
        "train", project.root, *TINY, "--train-count", "2", "--val-count", "1", "--seed", "2",
        "--slice-axis", "1",
    )  # fmt: skip
    assert result.code == 0, result.err
    [model] = Project.open(project.root).list_models()
    assert (len(model.train_case_ids), len(model.val_case_ids)) == (2, 1)
    assert not set(model.train_case_ids) & set(model.val_case_ids)
    assert (model.config["seed"], model.config["slice_axis"], model.metrics["epochs"]) == (2, 1, 1)
    assert (model.config["train_count"], model.config["val_count"]) == (2, 1)
    assert model.config["include_pseudo"] == "none"
    preview = training_preview_path(project, model.id)
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(preview.parent.glob(".tmp-*"))  # replaced atomically: no temporary left
    assert run_cli("report", project.root).code == 0
    assert f'src="training_model-{model.id}.png"' in (project.root / "reports/index.html").read_text()
    help_text = " ".join(run_cli("train", "--help").out.replace("│", " ").split())  # rich's table, unwrapped
    for default in ("default 50", "default 0", "default: all not validating", "default: the axial one"):
        assert default in help_text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--val-count", "4"), "4 validation cases of 4 labelled: expected 0 to 3"),
        (("--train-count", "9", "--val-count", "1"), "9 training cases: expected 1 to 3"),
        (("--slice-axis", "3"), "slice_axis"),
        (("--pseudo-entropy", "0.2"), "expected the confident policy"),
        (("--include-pseudo=sometimes",), "expected one of none, all, confident"),
        (("--network", "unet", "--deep-supervision", "1"), "deep_supervision=1 is not valid"),  # UNet: none
        (("--deep-supervision", "1"), "at least 3 levels for network='dynunet'"),  # asks a DynUNet; TINY: 2
    ],
)
def test_bad_run_options_are_one_line_and_record_nothing(run_cli, project, args, expected):
    result = run_cli("train", project.root, *TINY, *args)
    assert result.code != 0 and expected in " ".join(result.err.split()), result.err
    assert Project.open(project.root).list_models() == []


def test_deep_supervision_reaches_a_dynunet_run(run_cli, project, captured):
    network = ("--network", "dynunet", "--features", "8,16,32,64")
    run_cli("train", project.root, *network, "--deep-supervision", "2")
    [call] = captured
    assert (call["config"].network, call["config"].deep_supervision) == ("dynunet", 2)


def test_correct_stores_the_reviewed_slices_as_the_versions_coverage(run_cli, project, tmp_path):
    case = project.get_case("c0")
    mask = np.zeros(case.shape, dtype=np.uint8)
    mask[4:8, 4:8, 6] = 1
    add = write_volume(Volume(mask, case.affine), tmp_path / "Add_liver.nii.gz")
    result = run_cli("correct", project.root, "c0", "--add", add, "--reviewed-slices", "5:8", "--axis", "2")
    assert result.code == 0, result.err
    assert "reviewed [0:32, 0:32, 5:8] only" in " ".join(result.out.split())
    version = Project.open(project.root).list_label_versions("c0")[-1]
    assert version.params["coverage"] == [{"offset": [0, 0, 5], "size": [32, 32, 3], "border_voxels": 0}]
    outside = run_cli("correct", project.root, "c0", "--add", add, "--reviewed-box", "0:32,0:32,0:99")
    assert outside.code == 1 and outside.err.count("\n") == 1 and "0 <= a < b <= 16" in outside.err


def test_mirror_flips_along_the_left_right_axis_and_swaps_the_schemas_pairs(run_cli, project, captured):
    from dataclasses import replace

    from segloop.core.labels import LabelSchema
    from segloop.store.config import CONFIG_NAME, write_config

    schema = LabelSchema.from_names(project.config.schema.names, pairs=[("kidney_left", "kidney_right")])
    write_config(replace(project.config, schema=schema), project.root / CONFIG_NAME, overwrite=True)
    run_cli("train", project.root, "--mirror", "--context-slices", "1", "--no-bf16")
    [call] = captured
    config = call["config"]
    # the phantoms' affine is diagonal: voxel axis 0 runs along RAS x, left-right
    assert (config.flip_axes, config.lateral_axis, config.context_slices) == ((0,), 0, 1)
    assert not config.cpu_bfloat16
    assert config.mirror_pairs == ((3, 4),)


def test_mirror_on_a_project_without_cases_is_one_line(tmp_path):
    from segloop.errors import NotFoundError
    from segloop.loop.cases import init_project
    from segloop.loop.training import train_config

    empty = init_project(tmp_path / "empty", ("liver",))
    with pytest.raises(NotFoundError, match="no case yet"):
        train_config(empty, mirror=True)


def test_round_takes_the_same_mirror_and_context_options(run_cli, project, monkeypatch):
    from dataclasses import replace

    import segloop.loop.rounds
    from segloop.core.labels import LabelSchema
    from segloop.store.config import CONFIG_NAME, write_config

    schema = LabelSchema.from_names(project.config.schema.names, pairs=[("kidney_left", "kidney_right")])
    write_config(replace(project.config, schema=schema), project.root / CONFIG_NAME, overwrite=True)
    calls = []

    def fake(project, config, **kwargs):
        calls.append({"config": config, **kwargs})
        raise SystemExit(0)

    monkeypatch.setattr(segloop.loop.rounds, "run_round", fake)
    run_cli("round", project.root, "--mirror", "--context-slices", "2", "--no-bf16")
    [call] = calls
    config = call["config"]
    assert (config.flip_axes, config.lateral_axis, config.mirror_pairs) == ((0,), 0, ((3, 4),))
    assert not config.cpu_bfloat16
    assert config.context_slices == 2 and call["asked"]["context_slices"] == 2


def test_a_mirrored_model_predicts_with_its_mirror_unless_told_not_to(run_cli, project):
    from dataclasses import replace

    from segloop.core.labels import LabelSchema
    from segloop.store.config import CONFIG_NAME, write_config

    schema = LabelSchema.from_names(project.config.schema.names, pairs=[("kidney_left", "kidney_right")])
    write_config(replace(project.config, schema=schema), project.root / CONFIG_NAME, overwrite=True)
    assert run_cli("train", project.root, *TINY, "--mirror").code == 0
    assert run_cli("predict", project.root, "--cases", "c0", "--device", "cpu").code == 0
    again = run_cli("predict", project.root, "--cases", "c0", "--device", "cpu", "--again", "--no-tta")
    assert again.code == 0, again.err
    default, once = (p.params for p in Project.open(project.root).list_predictions("c0"))
    assert (default["tta_flips"], default["passes"]) == ([0], 2)  # the phantoms' left-right axis is 0
    assert (once["tta_flips"], once["passes"]) == ([], 1)


def test_the_defaults_are_the_ablations_winners_and_continual_training_keeps_its_architecture(
    run_cli, project, tmp_path
):
    from segloop.loop.training import train_config
    from tests.loop.test_ranking import start_model

    plain = train_config(project)
    assert (plain.network, plain.deep_supervision, plain.context_slices, plain.flip_axes) == (
        "dynunet",
        2,
        1,
        (),
    )
    unet = train_config(project, network="unet")
    assert (unet.deep_supervision, unet.context_slices) == (0, 1)
    short = train_config(project, time_budget_min=5)  # less time: the UNet learns more in it
    assert (short.network, short.deep_supervision, short.context_slices) == ("unet", 0, 1)
    assert train_config(project, time_budget_min=12).network == "dynunet"
    assert train_config(project, time_budget_min=5, deep_supervision=1).network == "dynunet"  # asked for
    for wrong in (
        {"features": 5},
        {"time_budget_min": "5"},
        {"deep_supervision": "2"},
        {"network": ["unet"]},
    ):
        with pytest.raises(InvalidInputError, match=next(iter(wrong))):
            train_config(project, **wrong)
    assert train_config(project, deep_supervision=1).deep_supervision == 1
    assert plain.cpu_bfloat16 and not train_config(project, cpu_bfloat16=False).cpu_bfloat16
    assert train_config(project, dims=3).context_slices == 0
    assert train_config(project, network="swinunetr").context_slices == 0  # a bundle's one channel

    paired = tmp_path / "paired"
    names = ",".join(project.config.schema.names)
    created = run_cli("init", paired, "--labels", names, "--pairs", "kidney_left : kidney_right")
    assert created.code == 0, created.err
    images = [str(p) for p in sorted((tmp_path / "img").glob("*.nii.gz"))]
    assert run_cli("add", paired, *images).code == 0
    opened = Project.open(paired)
    assert opened.config.schema.pairs == (("kidney_left", "kidney_right"),)
    assert train_config(opened).flip_axes == (0,) and train_config(opened).mirror_pairs == ((3, 4),)
    assert train_config(opened, mirror=False).flip_axes == ()
    bad = run_cli("init", tmp_path / "bad", "--labels", names, "--pairs", "kidney_left")
    assert bad.code != 0 and "A:B pairs" in bad.err
    unknown = run_cli("init", tmp_path / "unknown", "--labels", names, "--pairs", "kidney_left:kidney_r")
    assert unknown.code == 1 and "unknown class 'kidney_r'" in unknown.err and unknown.err.count("\n") == 1
    assert not (tmp_path / "unknown").exists() and not (tmp_path / "bad").exists()  # nothing written

    start_model(project)  # a UNet recorded before the options (one slice): continued as it was
    kept = train_config(project)
    assert (kept.network, kept.deep_supervision, kept.context_slices) == ("unet", 0, 0)
    asked = train_config(project, network="dynunet")  # another network: the ablation's settings for it
    assert (asked.deep_supervision, asked.context_slices) == (2, 1)
    dynunet = {"dims": 2, "network": "dynunet", "deep_supervision": 1, "context_slices": 2}
    record = project.start_model(
        author="test", mode="full", parent_id=None, config=dynunet, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    project.finish_model(record.id, status="done", metrics={}, config=dynunet)
    kept = train_config(project)
    assert (kept.network, kept.deep_supervision, kept.context_slices) == ("dynunet", 1, 2)
    assert train_config(project, network="unet").context_slices == 1
