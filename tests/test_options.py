"""Each option's default is written once (issue 27): the command line shows and uses the defaults of the
options dataclasses (commands/options.py) and builds each options object by keyword, and the defaults that
mirror a config key agree with conf/. Every check compares two sources: what the command line declares
or builds against the dataclass, the dataclass against the composed conf/."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from helpers import compose
from typer.testing import CliRunner

from rcnn_cli.cli import app
from rcnn_cli.commands.options import (
    BenchmarkOptions,
    CheckOptions,
    EvalOptions,
    ExportOptions,
    PredictOptions,
    ServeOptions,
    TrainOptions,
    TuneOptions,
)
from rcnn_cli.predict.runner import PredictOptions as RunnerOptions

# Written here, not read from cli.py: each verb, its options class, and the command-line parameters whose
# name is not the field's (a dotted field sits inside a field: serve's limits).
VERBS = {
    "train": (TrainOptions, {}),
    "tune": (TuneOptions, {}),
    "data check": (CheckOptions, {}),
    "eval": (EvalOptions, {}),
    "predict": (PredictOptions, {"fmt": "formats", "no_draw": "draw"}),
    "serve": (ServeOptions, {"max_batch": "limits.max_batch", "max_wait_ms": "limits.max_wait_ms",
                             "max_body_mb": "limits.max_body_mb", "max_pixels": "limits.max_pixels",
                             "body_timeout": "limits.body_timeout_s"}),
    "export": (ExportOptions, {}),
    "benchmark": (BenchmarkOptions, {"no_train": "train"}),
}
NEGATED = {"no_draw", "no_train"}       # --no-draw sets draw to the opposite of what is typed
# Flags with no field of their own: export's three ways of naming formats become ExportOptions.suffixes
# (checked below, by what the command line builds with none of them).
FLAGS_ONLY = {("export", "onnx"), ("export", "torchscript"), ("export", "formats")}
# Fields no command-line option of their own sets: the suffixes come from those flags, predict's overrides are
# typed among its sources, and serve's decoding threads are not offered.
NOT_OFFERED = {("export", "suffixes"), ("predict", "overrides"), ("serve", "limits.decode_threads")}
NO_DEFAULT = object()


def click_command(verb: str):
    command = typer.main.get_command(app)
    for word in verb.split():
        command = command.commands[word]
    return command


def field_default(options: type, dotted: str):
    """The default a dataclass field declares (NO_DEFAULT when it has none), read from the dataclass
    itself; ``limits.max_batch``: a field of the dataclass that is the default of ``limits``."""
    name, _, rest = dotted.partition(".")
    declared = {item.name: item for item in dataclasses.fields(options)}[name]
    if declared.default is not dataclasses.MISSING:
        value = declared.default
    elif declared.default_factory is not dataclasses.MISSING:
        value = declared.default_factory()
    else:
        return NO_DEFAULT
    return getattr(value, rest) if rest else value


def offered_fields(options: type) -> set[str]:
    """Every field of ``options`` with a default, a dataclass-valued one as its own fields (limits.max_batch)."""
    names = set()
    for item in dataclasses.fields(options):
        value = field_default(options, item.name)
        if dataclasses.is_dataclass(value):
            names |= {f"{item.name}.{inner.name}" for inner in dataclasses.fields(value)}
        elif value is not NO_DEFAULT:
            names.add(item.name)
    return names


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_option_shows_the_default_of_its_options_field(verb):
    options, renamed = VERBS[verb]
    compared = set()
    for param in click_command(verb).params:
        if param.name == "help" or (verb, param.name) in FLAGS_ONLY:
            continue
        name = renamed.get(param.name, param.name)
        expected = field_default(options, name)
        if expected is NO_DEFAULT:
            assert param.required, f"rcnn {verb} {param.name}: {options.__name__}.{name} has no default"
        else:
            shown = list(param.default) if isinstance(param.default, tuple) else param.default
            if param.name in NEGATED:
                shown = not shown
            assert not param.required and shown == expected, \
                f"rcnn {verb} {param.name}: {shown!r} on the command line, {expected!r} in {options.__name__}.{name}"
        compared.add(name)
    assert compared, f"rcnn {verb}: no option compared"
    offered = offered_fields(options) - {name for v, name in NOT_OFFERED if v == verb}
    assert offered <= compared, f"rcnn {verb} offers no option for {sorted(offered - compared)}"


# The least each verb takes, and what it must build from it: the dataclass with those fields alone.
BARE = {
    "train": ([], TrainOptions()),
    "tune": ([], TuneOptions()),
    "data check": ([], CheckOptions()),
    "eval": (["--weights", "w.ckpt"], EvalOptions(weights="w.ckpt")),
    "predict": (["a.jpg"], PredictOptions(sources=["a.jpg"])),
    "serve": ([], ServeOptions()),
    "export": ([], ExportOptions()),
    "benchmark": ([], BenchmarkOptions()),
}
# Every option typed with a value of its own, and the options object that says it, built here by keyword:
# an argument passed to the wrong field (options built by position) shows as a difference.
TYPED = {
    "train": (["a=1", "--config-dir", "c", "--multirun", "--folds", "3"],
              TrainOptions(overrides=["a=1"], config_dir=Path("c"), multirun=True, folds=3)),
    "tune": (["a=1", "--config-dir", "c"], TuneOptions(overrides=["a=1"], config_dir=Path("c"))),
    "data check": (["a=1", "--config-dir", "c", "--json", "j.json", "--show", "2", "--out", "o", "--augmented",
                    "--weights", "w.ckpt"],
                   CheckOptions(overrides=["a=1"], config_dir=Path("c"), json_path=Path("j.json"), show=2,
                                out=Path("o"), augmented=True, weights="w.ckpt")),
    "eval": (["a=1", "--config-dir", "c", "-w", "w.ckpt", "--json", "j.json", "--predictions", "p.json", "--out", "o",
              "--tile", "640", "--overlap", "0.3", "--precision", "bf16", "--tta", "--label-issues"],
             EvalOptions(weights="w.ckpt", overrides=["a=1"], config_dir=Path("c"), json_path=Path("j.json"),
                         predictions=Path("p.json"), out=Path("o"), tile=640, overlap=0.3, tta=True,
                         label_issues=True, precision="bf16")),
    "predict": (["a.jpg", "a=1", "-w", "w.ckpt", "--config-dir", "c", "--out", "o", "--format", "csv", "--conf", "0.4",
                 "--classes", "cat", "--batch-size", "7", "--every", "3", "--no-draw", "--save-video", "--tile", "640",
                 "--overlap", "0.3", "--device", "cpu", "--precision", "bf16", "--tta"],
                PredictOptions(sources=["a.jpg"], weights="w.ckpt", overrides=["a=1"], config_dir=Path("c"),
                               out=Path("o"), formats=["csv"], conf="0.4", classes="cat", batch_size=7, every=3,
                               draw=False, save_video=True, tile=640, overlap=0.3, device="cpu", precision="bf16",
                               tta=True)),
    "serve": (["a=1", "--config-dir", "c", "-w", "w.ckpt", "--host", "0.0.0.0", "--port", "9000", "--conf", "0.4",
               "--max-batch", "3", "--max-wait-ms", "5", "--max-body-mb", "7", "--max-pixels", "1000",
               "--body-timeout", "9", "--tta"],
              ServeOptions(weights="w.ckpt", overrides=["a=1"], config_dir=Path("c"), host="0.0.0.0", port=9000,
                           conf=0.4, tta=True, limits=dataclasses.replace(
                               field_default(ServeOptions, "limits"), max_batch=3, max_wait_ms=5.0, max_body_mb=7.0,
                               max_pixels=1000, body_timeout_s=9.0))),
    "export": (["a=1", "--config-dir", "c", "-w", "w.ckpt", "--torchscript", "--out", "o.onnx", "--images", "i.jpg",
                "--input-dtype", "float32", "--int8", "--half", "--json", "j.json"],
               ExportOptions(weights="w.ckpt", suffixes=[".torchscript"], overrides=["a=1"], config_dir=Path("c"),
                             out=Path("o.onnx"), images=["i.jpg"], input_dtype="float32", int8=True, half=True,
                             json_path=Path("j.json"))),
    "benchmark": (["a=1", "--config-dir", "c", "-w", "w.ckpt", "--images", "i", "--count", "5", "--batch", "6",
                   "--repeats", "7", "--warmup", "2", "--no-train", "--scaling", "--json", "j.json", "--data-scale",
                   "10", "--load-scale", "20", "--formats", "onnx", "--profile"],
                  BenchmarkOptions(overrides=["a=1"], config_dir=Path("c"), weights=Path("w.ckpt"), images="i",
                                   count=5, batch=6, repeats=7, warmup=2, train=False, scaling=True,
                                   json_path=Path("j.json"), data_scale="10", load_scale="20", formats="onnx",
                                   profile=True)),
}
# The function each verb hands its options object to.
RUNS = {"train": "crossval", "tune": "tune", "data check": "check", "eval": "evaluate", "predict": "predict",
        "serve": "serve", "export": "export", "benchmark": "benchmark"}


def built_options(verb: str, arguments: list[str], monkeypatch):
    """The options object ``rcnn VERB ARGUMENTS`` hands to its command, which is not run."""
    import importlib

    module = importlib.import_module(f"rcnn_cli.commands.{RUNS[verb]}")
    handed = []
    monkeypatch.setattr(module, "run", lambda options: handed.append(options) or 0)
    result = CliRunner().invoke(app, [*verb.split(), *arguments], prog_name="rcnn")
    assert result.exit_code == 0, result.output
    assert len(handed) == 1, f"rcnn {verb} handed {len(handed)} options objects"
    return handed[0]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_the_command_line_builds_the_dataclass_defaults_and_each_typed_value_in_its_field(verb, monkeypatch):
    assert set(BARE) == set(TYPED) == set(RUNS) == set(VERBS)
    arguments, expected = BARE[verb]
    assert built_options(verb, arguments, monkeypatch) == expected
    arguments, expected = TYPED[verb]
    assert built_options(verb, arguments, monkeypatch) == expected


# Option defaults that mirror a config key: each pair is written in two places (an option is not a config
# key), so this test is what keeps them equal. Composed from the real conf/, as `rcnn config show` would.
MIRRORS = [
    (PredictOptions, "overlap", "dataset.tile_overlap"),   # conf/dataset: validation tiles as eval --tile --overlap
    (EvalOptions, "overlap", "dataset.tile_overlap"),
    (RunnerOptions, "overlap", "dataset.tile_overlap"),
    (RunnerOptions, "nms_iou", "model.box_nms_thresh"),         # merging tiles as the model merges boxes
    (RunnerOptions, "nms_agnostic", "model.box_nms_agnostic"),
    (RunnerOptions, "num_workers", "dataset.num_workers"),
]


def where(options: type) -> str:
    return f"{options.__module__.removeprefix('rcnn_cli.')}.{options.__name__}"


@pytest.mark.parametrize("options,name,key", MIRRORS, ids=[f"{where(o)}.{n}={k}" for o, n, k in MIRRORS])
def test_option_defaults_that_mirror_a_config_key_equal_the_composed_conf(options, name, key):
    cfg = compose()
    section, _, leaf = key.partition(".")
    assert field_default(options, name) == cfg[section][leaf], f"{where(options)}.{name} vs {key}"


def test_data_check_pictures_go_under_the_configured_runs_root_by_default():
    assert field_default(CheckOptions, "out").parent == Path(compose().runs_root)


def test_the_command_line_imports_no_model_stack():
    """cli.py reads its defaults from commands/options.py at import: that must stay light (rcnn --help)."""
    code = ("import sys, rcnn_cli.cli, rcnn_cli.commands.options\n"
            "print(sorted(m for m in ('torch', 'lightning', 'hydra', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_eval_hands_its_shorthands_to_the_settings_rule_typed_last(tmp_path, monkeypatch):
    """--precision and --tta are model.precision=... and model.tta=true typed after the user's overrides,
    as rcnn predict's are; EvalOptions carries both, so the Python side can say them too."""
    from rcnn_cli.commands import evaluate

    class Resolved(Exception):
        pass

    def resolve(command, overrides, **_):
        raise Resolved(overrides)

    monkeypatch.setattr(evaluate, "resolve", resolve)
    options = EvalOptions(weights="w.ckpt", overrides=["model.precision=int8"], out=tmp_path, precision="bf16",
                          tta=True)
    with pytest.raises(Resolved) as resolved:
        evaluate.run(options)
    assert resolved.value.args[0] == ["model.precision=int8", "model.precision=bf16", "model.tta=true"]


def test_the_help_names_the_weights_used_without_weights():
    """--weights' help names the default weights in words (cli.py may not import torch to read them):
    the name there must be the one commands use (model/zoo.py)."""
    from rcnn_cli.model import zoo

    weights = next(p for p in click_command("predict").params if p.name == "weights")
    assert f"(default: {zoo.DEFAULT_WEIGHTS})" in weights.help, weights.help
