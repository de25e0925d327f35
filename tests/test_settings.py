"""The one settings rule (settings.resolve): checkpoint's stored config < presets < typed values, the
same for train/resume, eval, predict, export and the Python API; wrong values are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TRAIN, compose, run_rcnn, tiny_images
from omegaconf import OmegaConf
from PIL import Image

from rcnn_cli import Detector
from rcnn_cli.settings.compose import config_groups
from rcnn_cli.settings.resolve import resolve
from rcnn_cli.settings.schema import RULES, ConfigError

QUICK = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def adamw_bccd_run(tmp_path_factory, bccd_root_module):
    """One short epoch of a run far from the defaults: bccd, adamw, batch 8, 24 epochs asked for."""
    from rcnn_cli.commands import train

    work = tmp_path_factory.mktemp("resume")
    run_dir = work / "runs" / "bccd"
    overrides = [*TINY_TRAIN, "dataset=bccd", "dataset.batch_size=8", "optim.lr=0.0005", "trainer.max_epochs=1",
                 f"run_dir={run_dir}", *QUICK]
    train.run(train.TrainOptions(overrides))
    return run_dir


@pytest.fixture(scope="module")
def bccd_root_module():
    from helpers import BCCD, require_shared

    require_shared()
    return BCCD


def test_resume_continues_with_every_stored_setting(adamw_bccd_run):
    from rcnn_cli.commands import train

    last = adamw_bccd_run / "checkpoints" / "last.ckpt"
    settings = resolve("train", [f"resume={last}", "trainer.max_epochs=2"])
    assert settings.notes == ["resume changes trainer.max_epochs: 1 -> 2"]
    train.train(settings)
    saved = OmegaConf.load(adamw_bccd_run / "config.yaml")
    assert (saved.dataset.name, saved.optim.name, saved.dataset.batch_size) == ("bccd", "adamw", 8)
    assert (saved.optim.lr, saved.model.min_size, saved.trainer.max_epochs) == (0.0005, 128, 2)
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == 1
    state = next(iter(checkpoint["optimizer_states"][0]["state"].values()))
    assert "exp_avg" in state                      # AdamW's moments, not SGD's momentum buffer


@pytest.mark.parametrize("change, key", [("optim=sgd", "optim.name"), ("model=resnet50_fpn", "model.backbone"),
                                         ("dataset.class_names=[a,b]", "dataset.class_names")])
def test_resume_refuses_a_change_that_cannot_continue_the_run(adamw_bccd_run, change, key):
    last = adamw_bccd_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=f"cannot resume with {key}"):
        resolve("train", [f"resume={last}", change])


def test_eval_and_predict_take_the_checkpoints_settings_then_the_typed_ones(tiny_run):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    for command in ("eval", "predict", "export"):
        stored = compose(weights=weights, command=command)
        assert (stored.model.min_size, stored.dataset.num_images, stored.optim.name) == (128, 48, "adamw")
        assert stored.model.weights == str(weights)
        typed = compose("model.box_score_thresh=0.001", "model.precision=fp32", weights=weights, command=command)
        assert (typed.model.box_score_thresh, typed.model.precision) == (0.001, "fp32")
        other = compose("dataset=bccd", weights=weights, command=command)
        assert other.dataset.name == "bccd" and other.model.min_size == 128


def test_eval_applies_model_overrides(tiny_run, tmp_path):
    from rcnn_cli.commands import evaluate

    weights = tiny_run / "checkpoints" / "best.ckpt"

    def scores(threshold: float) -> list[float]:
        out = tmp_path / f"t{threshold}.json"
        evaluate.run(evaluate.EvalOptions(weights, [f"model.box_score_thresh={threshold}", "model.precision=fp32"],
                                          out=tmp_path / str(threshold), predictions=out))
        return [d["score"] for d in json.loads(out.read_text())]

    low = scores(0.001)
    median = round(float(np.median(low)), 3)
    high = scores(median)
    assert min(low) < median <= min(high) and 0 < len(high) < len(low)


def test_eval_uses_the_checkpoints_precision(tmp_path):
    """A checkpoint trained with model.precision=fp32 is scored in fp32 unless the user says otherwise."""
    from rcnn_cli.commands import train

    run_dir = tmp_path / "runs" / "fp32"
    train.run(train.TrainOptions([*TINY_TRAIN, "model.precision=fp32", f"run_dir={run_dir}", *QUICK]))
    weights = run_dir / "checkpoints" / "last.ckpt"
    assert compose(weights=weights, command="eval").model.precision == "fp32"
    assert compose(weights=weights, command="predict").model.precision == "fp32"
    assert compose("model.precision=bf16", weights=weights, command="eval").model.precision == "bf16"


def test_predict_and_export_apply_key_value_overrides(tiny_run, tmp_path):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    images = tiny_images(6)

    def scores(threshold: float) -> list[float]:
        out = run_rcnn("predict", *map(str, images), "--weights", str(weights), "--conf", "0", "--out",
                       str(tmp_path / str(threshold)), f"model.box_score_thresh={threshold}", "device=cpu",
                       cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        results = json.loads((tmp_path / str(threshold) / "predictions.json").read_text())
        assert len(results) == 6
        return [d["score"] for r in results for d in r["detections"]]

    low = scores(0.001)
    median = round(float(np.median(low)), 3)
    high = scores(median)
    assert min(low) < median <= min(high) and 0 < len(high) < len(low)
    # a threshold the model still detects above (an export checked on nothing is refused)
    exported = run_rcnn("export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx"),
                        f"model.box_score_thresh={median}", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert float(meta["score_threshold"]) == median


def test_every_entry_point_defaults_to_auto_device_and_precision(tiny_run, monkeypatch):
    from rcnn_cli import hardware

    weights = tiny_run / "checkpoints" / "best.ckpt"
    for command in ("predict", "benchmark"):
        cfg = compose(weights=weights, command=command)
        assert (cfg.device, cfg.model.precision) == ("auto", "auto")
    assert compose(weights=weights, command="export").device == "cpu"      # traced on the CPU, see below
    detector = Detector.load(weights)
    assert detector.runs_as.startswith("auto") and detector.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("override, message", [
    ("model.box_head=convfc", "did you mean conv_fc"),
    ("model.roi_pool=roialign2", "model.roi_pool='roialign2': must be one of roialign, roipool"),
    ("model.norm=batchnorm", "must be one of auto, frozen_bn, bn"),
    ("model=resnet5_fpn", "did you mean resnet50_fpn"),
    ("model.box_hed=two_mlp", "unknown config key 'model.box_hed'; did you mean box_head"),
    ("dataset.batch_size=four", "dataset.batch_size='four': must be an integer"),
    ("model.box_score_thresh=1.5", "must be in [0.0, 1.0]"),
    ("device=gpu", "device='gpu'"),
    ("min_size", "overrides are key=value"),
    # every section is checked, logger and augment included (issue 27: these two were accepted)
    ("logger.name=tensorbaord", "logger.name='tensorbaord': must be one of tensorboard, csv, mlflow, wandb "
                                "(did you mean tensorboard?)"),
    ("augment.hflip=7", "augment.hflip=7: must be in [0.0, 1.0]"),
    ("augment=strong augment.crop.size=big", "augment.crop.size='big': must be an integer"),
    ("seed=abc", "seed='abc': must be an integer"),
    ("trainer.devices=several", "trainer.devices='several'"),
    # a learning rate of 0 trains nothing for the whole run (was accepted)
    ("optim.lr=0", "optim.lr=0: must be above 0 (a learning rate of 0 trains nothing)"),
    ("optim.base_lr=0.0", "optim.base_lr=0.0: must be above 0 (a learning rate of 0 trains nothing)"),
    ("optim.base_lr=-0.1", "optim.base_lr=-0.1: must be above 0"),
])
def test_a_wrong_value_is_one_line_naming_the_valid_choices(override, message):
    with pytest.raises(ConfigError) as caught:
        compose(*override.split())
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_typo_is_exit_2_on_the_command_line_without_a_traceback(tmp_path):
    out = run_rcnn("config", "show", "model.roi_pool=roialign2", cwd=tmp_path)
    assert out.returncode == 2 and "error: model.roi_pool='roialign2'" in out.stderr
    assert "Traceback" not in out.stderr


def test_python_api_takes_the_same_rule(tiny_run):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    detector = Detector.load(weights, box_score_thresh=0.4, precision="fp32")
    assert detector.config["box_score_thresh"] == 0.4 and detector.config["min_size"] == 128
    assert detector.runs_as == "fp32"
    with pytest.raises(ConfigError, match="did you mean conv_fc"):
        Detector.load(weights, box_head="convfc")


def test_every_key_of_every_preset_has_a_declared_type_or_a_typed_default():
    """A key whose default is null must have a rule, or a wrong type would pass unchecked: every group
    (logger and augment too) and the top-level keys."""
    from rcnn_cli.settings.schema import leaves

    checked = set()
    for group, options in config_groups().items():
        for option in options:
            for key, value in leaves(OmegaConf.to_container(compose(f"{group}={option}"), resolve=False)):
                checked.add(key.split(".")[0])
                assert value is not None or key in RULES, f"{group}={option}: {key} needs a rule in schema.RULES"
    assert {"model", "dataset", "augment", "optim", "trainer", "callbacks", "logger", "tune", "seed", "device",
            "name", "resume"} <= checked


@pytest.mark.parametrize("override", ["trainer.devices=auto", "trainer.devices=[0,1]", "trainer.devices=-1",
                                      "augment=strong", "augment=none", "logger=mlflow", "logger=wandb",
                                      "logger=mlflow logger.tracking_uri=sqlite:///x.db", "augment.scale=null",
                                      "name=sweep",
                                      "trainer.limit_train_batches=0.5", "trainer.gradient_clip_val=10"])
def test_the_values_the_shipped_comments_offer_are_accepted(override):
    compose(*override.split())


@pytest.mark.parametrize("preset", config_groups()["model"])
def test_every_model_preset_builds_and_detects(preset):
    detector = Detector(preset, num_classes=3, min_size=96, max_size=96, precision="fp32", device="cpu")
    result = detector.predict(torch.zeros(3, 80, 100, dtype=torch.uint8))
    assert set(result) == {"boxes", "scores", "labels", "names"} and result["boxes"].shape[1] == 4


def test_python_api_decodes_files_like_training(tmp_path):
    """Transparent PNGs on white and 16-bit PNGs scaled, exactly as rcnn predict and training read them."""
    from rcnn_cli.api import to_chw_tensor
    from rcnn_cli.data.images import read_chw

    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(tmp_path / "t.png")
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "g16.png")
    for name in ("t.png", "g16.png"):
        assert torch.equal(to_chw_tensor(tmp_path / name), read_chw(tmp_path / name))
    assert int(to_chw_tensor(tmp_path / "t.png").min()) == 255


def test_early_stopping_patience_is_counted_in_epochs():
    from rcnn_cli.training.trainer import patience_in_checks

    assert patience_in_checks(5, OmegaConf.create({"check_val_every_n_epoch": 1})) == 5
    assert patience_in_checks(5, OmegaConf.create({"check_val_every_n_epoch": 2})) == 3
    assert patience_in_checks(1, OmegaConf.create({"check_val_every_n_epoch": 4})) == 1


def test_config_show_prints_what_a_command_would_run_with(tiny_run, tmp_path):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    out = run_rcnn("config", "show", "--weights", str(weights), "model.box_score_thresh=0.5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shown = OmegaConf.create(out.stdout)
    assert (shown.model.box_score_thresh, shown.model.min_size, shown.optim.name) == (0.5, 128, "adamw")


def test_library_packages_never_import_commands_or_the_api():
    root = Path(__file__).resolve().parents[1] / "rcnn_cli"
    offenders = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in ("commands", "cli.py", "api.py", "__init__.py"):
            continue
        text = path.read_text()
        if any(marker in text for marker in ("from ..commands", "from .commands", "from ..api", "from .api ",
                                             "rcnn_cli.commands", "rcnn_cli.api")):
            offenders.append(str(relative))
    assert not offenders
    predict_side = (root / "predict").rglob("*.py")
    assert not [p for p in predict_side if "..export" in p.read_text()]
    assert not [p for p in (root / "export").rglob("*.py") if "..predict" in p.read_text()]


def test_settings_conf_always_ships_are_read_directly():
    """A key every preset of its group ships is read as ``cfg.key``, never ``cfg.get("key", default)``:
    the default lives in conf/ alone, and a key renamed there fails loudly instead of running on a
    second default written in the code (issue 27: data/readers/load.py, data/pipeline/datamodule.py)."""
    import ast
    import re

    groups = {group: options for group, options in config_groups().items() if group != "experiment"}
    shipped: set[str] = set(OmegaConf.to_container(compose())) - set(groups)       # the top-level keys
    for group, options in groups.items():
        keys = [set(compose(f"{group}={option}")[group]) for option in options]
        shipped |= set.intersection(*keys)
    config_like = re.compile(r"(^|\.)(cfg|config|[a-z]+_cfg)(\.(dataset|model|optim|augment|trainer))?$")
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "rcnn_cli").rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            # names bound to a config in this function (``data = self.cfg.dataset``) read like one
            aliases = {target.id for node in ast.walk(function) if isinstance(node, ast.Assign)
                       and config_like.search(ast.unparse(node.value)) for target in node.targets
                       if isinstance(target, ast.Name)}
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                        and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in shipped
                        and (config_like.search(receiver := ast.unparse(node.func.value)) or receiver in aliases)):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    found = sorted(set(found))
    assert not found, "read these directly (conf/ ships them):\n" + "\n".join(found)


def test_eval_runs_where_trainer_accelerator_says_with_or_without_tiles(tiny_run):
    """One answer (issue 27): eval scored on trainer.accelerator, but with --tile on ``device``."""
    weights = tiny_run / "checkpoints" / "best.ckpt"
    for accelerator, device in (("cpu", "cpu"), ("gpu", "cuda"), ("cuda", "cuda"), ("auto", "auto")):
        assert compose(f"trainer.accelerator={accelerator}", weights=weights, command="eval").device == device
    with pytest.raises(ConfigError, match=r"^device=cpu: rcnn eval runs where trainer.accelerator says"):
        compose("device=cpu", weights=weights, command="eval")
    assert compose("device=cpu", weights=weights, command="predict").device == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("tile", [None, 64])
def test_eval_on_a_gpu_accelerator_without_one_is_one_line_tiled_or_not(tiny_run, tile):
    from rcnn_cli.commands import evaluate
    from rcnn_cli.errors import UsageError

    options = evaluate.EvalOptions(tiny_run / "checkpoints" / "best.ckpt", ["trainer.accelerator=gpu"], tile=tile)
    with pytest.raises(UsageError, match=r"^trainer.accelerator=gpu: this machine has no CUDA GPU"):
        evaluate.run(options)


def test_export_runs_on_the_cpu_and_refuses_a_typed_device_it_would_not_use(tiny_run):
    """rcnn export appended device=cpu after the user's overrides: a typed device=cuda was silently replaced."""
    weights = tiny_run / "checkpoints" / "best.ckpt"
    assert compose("device=cpu", weights=weights, command="export").device == "cpu"
    for typed in ("device=cuda", "device=auto", "model.precision=int8"):
        with pytest.raises(ConfigError, match=rf"^{typed}: rcnn export traces the exact fp32 model on the CPU"):
            compose(typed, weights=weights, command="export")
    assert compose("model.precision=fp32", weights=weights, command="export").model.precision == "fp32"


def test_commands_never_edit_the_settings_resolve_returned():
    """resolve is the only place settings are decided (issue 27: predict and serve lowered
    model.box_score_thresh on the resolved settings afterwards)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "rcnn_cli"
    edits = []
    for path in [*sorted((root / "commands").glob("*.py")), root / "api.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                base = target
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(base, ast.Name) and base.id == "settings" and base is not target:
                    edits.append(f"{path.name}:{node.lineno} {ast.unparse(target)}")
            # a copy to edit is an edit too (rcnn eval's exact model was copy.copy(settings), then fp32)
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("copy", "deepcopy", "replace") \
                    and any(isinstance(arg, ast.Name) and arg.id == "settings" for arg in node.args):
                edits.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not edits, edits


def test_the_score_floor_predict_and_serve_need_is_decided_by_resolve(tiny_run):
    """The model keeps detections down to the lowest --conf (predict and serve show none below it),
    never above its own threshold; a typed model.box_score_thresh stands."""
    weights = tiny_run / "checkpoints" / "best.ckpt"

    def floor(*typed: str, score_floor: float | None) -> float:
        return resolve("predict", list(typed), weights=weights, score_floor=score_floor).cfg.model.box_score_thresh

    assert floor(score_floor=None) == 0.05                               # conf/'s, as the checkpoint stored it
    assert floor(score_floor=0.01) == 0.01 and floor(score_floor=0.25) == 0.05
    assert floor("model.box_score_thresh=0.3", score_floor=0.01) == 0.3


def test_the_exact_variant_is_what_resolve_gives_with_fp32_typed(tiny_run):
    """rcnn eval at a fast precision scores the exact model beside it; those settings come from the rule
    (settings.resolve.exact_variant), equal to resolving with model.precision=fp32 typed, the resolved
    ones left as they were and the checkpoint not read again."""
    from rcnn_cli.settings.resolve import exact_variant

    weights = tiny_run / "checkpoints" / "best.ckpt"
    fast = resolve("eval", ["model.precision=bf16", "model.box_score_thresh=0.3", "dataset.tile=64"], weights=weights)
    exact = exact_variant(fast)
    typed = resolve("eval", ["model.box_score_thresh=0.3", "dataset.tile=64", "model.precision=fp32"], weights=weights)
    assert fast.cfg.model.precision == "bf16" and exact.cfg.model.precision == "fp32"
    assert OmegaConf.to_container(exact.cfg) == OmegaConf.to_container(typed.cfg)
    assert exact.typed == typed.typed and exact.checkpoint is fast.checkpoint and exact.weights is fast.weights


def test_eval_scores_a_fast_path_beside_the_exact_variant(tiny_run, monkeypatch):
    """compare_with_exact scores the settings exact_variant derives, and leaves eval's own untouched."""
    from types import SimpleNamespace

    from rcnn_cli.commands import evaluate

    settings = resolve("eval", ["model.precision=bf16"], weights=tiny_run / "checkpoints" / "best.ckpt")
    before = OmegaConf.to_container(settings.cfg)
    scored = []
    figures = {"map": 0.5, "map_50": 0.75, "map_75": 0.5}

    def score(chosen, tile=None, overlap=None, predictor=None):
        scored.append(chosen)
        return SimpleNamespace(summary=lambda: figures), [], None

    monkeypatch.setattr(evaluate, "score", score)
    result = SimpleNamespace(report=SimpleNamespace(summary=lambda: figures))
    assert evaluate.compare_with_exact(settings, result, None, 0.2) == figures
    (exact,) = scored
    assert exact is not settings and exact.cfg.model.precision == "fp32"
    assert OmegaConf.to_container(exact.cfg) == {**before, "model": {**before["model"], "precision": "fp32"}}
    assert OmegaConf.to_container(settings.cfg) == before


@pytest.mark.parametrize("command", ["export", "benchmark", "check"])
def test_an_ensemble_is_one_line_for_a_command_that_takes_one_weights_file(tmp_path, command):
    """Not its first member taken silently: the commands that run ensembles are named."""
    members = [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    for member in members:
        member.write_bytes(b"not read")
    given = ",".join(map(str, members))
    with pytest.raises(ConfigError, match=rf"^--weights {given}: an ensemble runs in rcnn predict, eval and serve, "
                                          rf"not in {command}; name one of its files$"):
        resolve(command, weights=given)
