"""Property-based hostile-input suite (issue 26's harness). Hypothesis generates hostile file names, config
values and malformed annotation records; each property says what the user must see whatever the input:

1. names (markup, emoji codes, control characters, leading dashes, 255-byte names, undecodable bytes) of
   ``rcnn predict``'s inputs and ``--out`` and of ``rcnn data check``'s records are printed as text, and a
   refusal is one line naming them;
2. config values (NaN, infinities, negatives, zero, huge, wrong types, interpolations that name nothing) are
   accepted as a valid value or refused in one line naming the key and what it must be, with no file written;
3. malformed VOC, COCO and YOLO records never raise anything but one DatasetError line, and every box a
   reader keeps is finite, inside its image, of positive area and of a known class.

The expectations are stated here, from what the values mean, never read from the code under test.
``RCNN_HYPOTHESIS_PROFILE=deep`` runs 20 times the examples with a fresh random seed each run (see
docs/reliability.md); the default profile ``ci`` is small and derandomized, so CI is reproducible.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from helpers import compose
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from rcnn_cli.data.errors import DatasetError
from rcnn_cli.settings.schema import ConfigError

COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=20, derandomize=True, **COMMON)
settings.register_profile("deep", max_examples=400, derandomize=False, **COMMON)
settings.load_profile(os.environ.get("RCNN_HYPOTHESIS_PROFILE", "ci"))


def budget(share: float) -> int:
    """This property's examples: a share of the profile's (a predict run costs more than a config check)."""
    return max(1, round(settings.default.max_examples * share))


# --------------------------------------------------------------------------------------------------------
# What "printed as text" means, said once: printable characters as they are; a character that would move
# the cursor, ring, colour the terminal or not show at all (newline, tab, ESC, a lone surrogate from an
# undecodable name) as its Python escape, so that a line stays one line and nothing is hidden.

def shown(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output[-3000:]
    return lines[0]


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh working folder per example (Hypothesis runs many examples in one test call)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(old)


@pytest.fixture(scope="module", autouse=True)
def composed_once():
    """Hydra composes the same presets the same way every time, and composing is 90% of a command's
    settings (a quarter second): each distinct set of presets is composed once here. The rule under test,
    the user's values applied to the composed tree and checked, runs in full every example."""
    import rcnn_cli.settings.resolve as resolve

    real, cache = resolve.compose_groups, {}

    def compose_groups(groups, config_dir=None):
        key = (tuple(sorted(groups.items())), str(config_dir))
        if key not in cache:
            cache[key] = real(groups, config_dir)
        return copy.deepcopy(cache[key])

    with mock.patch.object(resolve, "compose_groups", compose_groups):
        yield


def rcnn(*args: str) -> tuple[int, str, str]:
    """The real command line in this process (``rcnn_cli.cli.main``, which prints errors): exit code, stdout
    and stderr. In-process keeps the suite under a minute; the subprocess path is tested elsewhere."""
    from rcnn_cli import cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", ["rcnn", *args]):
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------------------------------------
# 1. Hostile names

PIECES = ["x[/b]y", "[bold]", "[/]", "[link=e.x]a[/link]", ":smile:", ":1st_place_medal:", "-rf", "--out",
          "a\\", "\\[b]", "%s%n", "{0}", "${HOME}", "~", "*", "?", "[", "]", "a=b", " ", "ñandú", "日本語", "😀",
          "e\u0301", "\u200b", "\n", "\r", "\t", "\x1b[31m", "\x07", "\x7f", "\x85", "\u2028", "\udcff", "\udc80"]
# Anything a Linux file name may hold: no NUL; "/" only between folders (``x[/b]y`` is the file ``b]y`` in
# the folder ``x[``); surrogates only as undecodable bytes give them.
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


def fits(name: str, room: int = 0) -> bool:
    """Whether a file can be made at the relative path ``name`` (``room`` bytes left for a suffix)."""
    parts = name.split("/")
    return all(p and p not in (".", "..") for p in parts) and all(len(os.fsencode(p)) <= 255 for p in parts[:-1]) \
        and len(os.fsencode(parts[-1])) + room <= 255


@st.composite
def file_names(draw, room: int = 4) -> str:
    """A relative path a file can have: pieces that Rich, a shell or a terminal would read as something
    else, any Unicode, and sometimes a last part near the 255-byte limit."""
    parts = draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(NAME_CHARS, min_size=1, max_size=6)),
                          min_size=1, max_size=5))
    name = "".join(parts)
    if draw(st.integers(0, 9)) == 0:
        name = name + "n" * max(0, 255 - room - len(os.fsencode(name.split("/")[-1])))
    assume(fits(name, room))
    return name


def independent(*paths: str) -> bool:
    """Whether files can be made at all of ``paths`` (none is another, or a folder holding another)."""
    return not any(a == b or b.startswith(a + "/") for a in paths for b in paths if a is not b)


def make(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        path.write_bytes(data)
    return path


def picture(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> None:
    pixels = np.random.RandomState(seed).randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


@pytest.fixture(scope="module")
def cached_predictor(tiny_run):
    """One real predictor of the tiny run for every example: loading it is most of a predict run's time."""
    from rcnn_cli.inference.predictor import load_predictor
    from rcnn_cli.settings.resolve import resolve

    weights = tiny_run / "checkpoints" / "best.ckpt"
    # 32 px pictures: what is tested is how names are printed, and a smaller picture is most of a run's time
    loaded = resolve("predict", ["model.precision=fp32", "model.min_size=32", "model.max_size=32"], weights=weights)
    predictor = load_predictor(loaded.cfg, loaded.checkpoint, typed=loaded.typed)
    return Loaded((weights, predictor, loaded.checkpoint))


class Loaded(tuple):
    def __repr__(self) -> str:            # Hypothesis prints the arguments of a failing example
        return f"<the tiny run's predictor: {self[0]}>"


@settings(max_examples=budget(0.5))
@given(good=file_names(), bad=file_names(), out=st.one_of(file_names(room=0), st.just("o" * 300)))
@example(good="x[/b]y", bad=":smile:\\", out="o[/b]x")
@example(good="a\nb", bad="-rf \x1b[31m", out="--out\t[bold]")
@example(good="n" * 251, bad="b", out="o")                  # the drawn picture's temp name was past 255 bytes
def test_predict_prints_hostile_names_as_text(cached_predictor, good, bad, out):
    assume(independent(f"{good}.png", f"{bad}.png") and out != "in")
    from rcnn_cli.model import factory

    weights, predictor, (state, meta) = cached_predictor
    # resolve reads the checkpoint's stored settings every run; the file does not change between examples
    with scratch() as work, mock.patch("rcnn_cli.inference.predictor.load_predictor", return_value=predictor), \
            mock.patch.object(factory, "read_weights_source", lambda _: (state, copy.deepcopy(meta))):
        picture(make(work / "in" / f"{good}.png"))
        make(work / "in" / f"{bad}.png", b"not a picture")
        code, _, err = rcnn("predict", "--weights", str(weights), f"--out={out}", "--precision", "fp32", "--",
                            "in")
        if not fits(out):                           # a name the file system refuses: one line naming it
            assert code == 2 and shown(out) in one_line(err) and "File name too long" in err
            assert os.listdir(work) == ["in"]
            return
        assume(not (work / "in" / f"{good}.png").is_relative_to(work / out))   # that refusal is tested elsewhere
        assert "Traceback" not in err and "MarkupError" not in err, err[-3000:]
        assert code == 1, err[-3000:]              # the broken picture is skipped, the run goes on
        assert f"skipped: {shown(f'in/{bad}.png')}: " in err
        assert f"results in {shown(out)} (" in err
        results = json.loads((work / out / "predictions.json").read_text())
        assert [r["image"] for r in results] == [f"in/{good}.png"]


@settings(max_examples=budget(2))
@given(name=st.one_of(file_names(room=0), st.text(NAME_CHARS, min_size=256, max_size=300)),
       how=st.sampled_from(["missing source", "out is a file", "missing weights"]))
@example(name="a\\", how="missing source")
@example(name="x\n[/b]", how="out is a file")
@example(name="n" * 300, how="missing source")
@example(name="a=b", how="missing source")                   # looks like a key=value override
@example(name="*", how="missing source")                     # a glob matching nothing
def test_a_refusal_naming_a_hostile_name_is_one_line(name, how):
    with scratch() as work, tempfile.TemporaryDirectory() as elsewhere:
        # the working folder holds nothing a name (a glob such as "*") could match
        weights, image = Path(elsewhere) / "w.ckpt", Path(elsewhere) / "p.png"
        weights.write_bytes(b"")
        picture(image)
        args = {"missing source": ["--weights", str(weights), "--", name],
                "out is a file": ["--weights", str(weights), f"--out={name}", "--", str(image)],
                "missing weights": ["--weights", name, "--", str(image)]}[how]
        if how == "out is a file":
            assume(fits(name))
            make(work / name, b"mine")
        before = sorted(os.listdir(work))
        code, _, err = rcnn("predict", *args)
        assert code == 2
        assert shown(name) in one_line(err)
        assert sorted(os.listdir(work)) == before                       # nothing written


@settings(max_examples=budget(1))
@given(present=file_names(), copy=file_names(), missing=file_names(), category=file_names(room=0))
@example(present="x[/b]y", copy="[bold]", missing="gone[/i]\\", category=":smile:")
@example(present="a", copy="b", missing="\\x\\y", category="c")       # refused as unsafe_path: named in its detail
def test_data_check_prints_hostile_record_names_as_text(present, copy, missing, category):
    from rcnn_cli.commands import check, text_console

    assume(independent(f"{present}.png", f"{copy}.png", f"{missing}.png"))
    # A name starting with a backslash is refused (it would leave the folder on Windows): not for the pictures
    # that must load, only for the missing one, whose line then names it as unsafe instead of missing.
    assume(not present.startswith("\\") and not copy.startswith("\\"))
    with scratch() as work:
        picture(make(work / "img" / f"{present}.png"), seed=1)
        picture(make(work / "img" / f"{copy}.png"), seed=1)            # a duplicate: its line names both
        names = [f"{present}.png", f"{copy}.png", f"{missing}.png"]
        entries = [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)]
        boxes = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 20, 20]} for i in range(3)]
        (work / "a.json").write_text(json.dumps({"images": entries, "annotations": boxes,
                                                 "categories": [{"id": 1, "name": category}]}))
        printed = io.StringIO()
        with mock.patch.object(check, "stdout", text_console(file=printed, width=100_000)):
            code, _, err = rcnn("data", "check", "dataset=coco", f"dataset.train_json={work}/a.json",
                                f"dataset.train_images={work}/img", "dataset.val_fraction=0")
        report = printed.getvalue()
        assert code == 0 and "Traceback" not in err, err[-3000:]
        for name in (category, f"{missing}.png", f"{present}.png", f"{copy}.png"):
            assert shown(name) in report, (name, report)


# --------------------------------------------------------------------------------------------------------
# 2. Config values. Each key's valid values, from what the key means: a count is a whole number from 1, a
# size a whole number of pixels from 32 (the coarsest feature map is 1/32 of the picture), a rate or
# threshold a finite number; and no integer past what a 64-bit integer holds (torch, numpy and Lightning
# keep them there).

INT64 = 2**63


def whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < INT64


def finite(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


VALID = {
    "optim.lr": lambda v: v is None or (finite(v) and v >= 0),        # null: base_lr scaled to the batch
    "trainer.max_epochs": lambda v: whole(v, 1),
    "dataset.batch_size": lambda v: whole(v, 1),
    "model.max_size": lambda v: whole(v, 32),
    "model.min_size": lambda v: whole(v, 32) or (isinstance(v, list) and bool(v) and all(whole(x, 32) for x in v)),
    "model.box_score_thresh": lambda v: finite(v) and 0 <= v <= 1,
    "dataset.val_fraction": lambda v: finite(v) and 0 <= v <= 1,
}


def scalars() -> st.SearchStrategy:
    return st.one_of(
        st.integers(-3, 300), st.integers(), st.sampled_from([INT64 - 1, INT64, -INT64 - 1, 10**30, 10**400]),
        st.floats(), st.sampled_from([0.0, -0.0, 1e-400, 1e308, 5e-324]),
        st.booleans(), st.none(), st.text("abc0123456789.e-", max_size=6))


def values() -> st.SearchStrategy:
    """Valid-looking values as often as hostile ones: a wrong element hides best among right ones."""
    usual = st.one_of(st.integers(32, 2000), st.floats(0, 1))
    mixed = st.lists(st.one_of(usual, usual, scalars()), max_size=3)
    return st.one_of(mixed, usual, scalars(), st.lists(st.lists(st.integers(0, 99), max_size=2), max_size=2))


def as_override(value) -> str:
    """How a user types ``value`` (Hydra's grammar): floats as Python writes them, strings quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {"nan": "nan", "inf": "inf", "-inf": "-inf"}[repr(value)]
    if isinstance(value, int):
        return str(value) if abs(value) < 10**300 else "1" + "0" * 400      # what a user types, past a float
    if isinstance(value, str):
        return f"'{value}'"
    return "[" + ",".join(as_override(v) for v in value) + "]"


class Accepted(Exception):
    """Raised in place of training: the settings got through."""


def refuse_to_train(settings):
    raise Accepted(settings)


INTERPOLATIONS = ["${nowhere}", "${oc.env:RCNN_NOT_SET_ANYWHERE}"]      # they name nothing: never a value


@settings(max_examples=budget(4))
@given(key=st.sampled_from([*sorted(VALID), "model.min_size"]),         # the one key that takes lists: twice
       value=st.one_of(values(), st.sampled_from(INTERPOLATIONS)))
@example(key="optim.lr", value="${nowhere}")
@example(key="optim.lr", value=10**400)
@example(key="model.min_size", value=[])
@example(key="model.min_size", value=["abc"])
@example(key="trainer.max_epochs", value=INT64)
def test_a_config_value_is_accepted_as_valid_or_refused_in_one_line(key, value):
    """One key at a time: with two, a refusal of one would hide the other accepted wrongly."""
    from omegaconf import OmegaConf

    from rcnn_cli.commands import train

    valid = value not in INTERPOLATIONS and VALID[key](value)
    override = f"{key}={value if value in INTERPOLATIONS else as_override(value)}"
    with scratch() as work, mock.patch.object(train, "train", side_effect=refuse_to_train):
        try:
            train.run(train.TrainOptions([override, f"run_dir={work}/run"]))
        except Accepted as accepted:
            assert valid, f"accepted {override}"
            assert OmegaConf.to_container(accepted.args[0].cfg, resolve=True)[key.split(".")[0]][
                key.split(".")[1]] == value
        except ConfigError as err:
            message = str(err)
            assert not valid, f"refused valid {override}: {message}"
            assert "\n" not in message and message.startswith(f"{key}=") and "must be" in message, message
        assert os.listdir(work) == []                                     # no run folder, nothing written


class Unusual:
    def __repr__(self) -> str:
        return "Unusual()"


@settings(max_examples=budget(2))
@given(key=st.sampled_from(sorted(VALID)), value=st.one_of(
    st.sampled_from([np.float32(0.5), np.int64(64), np.array([64, 96]), np.bool_(True), Unusual(), b"64", {"a": 1}]),
    values(), st.tuples(st.integers(0, 999))))
@example(key="dataset.batch_size", value=np.int64(2))
def test_a_python_api_value_is_accepted_as_valid_or_refused_in_one_line(key, value):
    from rcnn_cli.settings.resolve import resolve

    plain = list(value) if isinstance(value, tuple) else value        # OmegaConf keeps a tuple as a list
    numpy_type = isinstance(value, (np.generic, np.ndarray))
    try:
        cfg = resolve("config", values={key: value}).cfg
    except ConfigError as err:
        assert numpy_type or isinstance(value, (Unusual, bytes, dict)) or not VALID[key](plain), str(err)
        assert "\n" not in str(err) and str(err).startswith(f"{key}=") and "must be" in str(err), str(err)
        return
    from omegaconf import OmegaConf

    assert not numpy_type and VALID[key](plain), f"accepted {key}={value!r}"
    assert OmegaConf.select(cfg, key) == plain or OmegaConf.to_container(OmegaConf.select(cfg, key)) == plain


@settings(max_examples=budget(4))
@given(text=st.one_of(st.floats().map(repr), st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "1_0", "0x1",
                                                               " 0.5 ", "", "\n0.3", "x" * 300]),
                      st.text(max_size=8)),
       table=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.one_of(st.floats(), st.integers(),
                                                                                  st.text(max_size=3)), max_size=3),
                       st.lists(st.floats(), max_size=2), st.binary(max_size=20)))
@example(text="nan", table=None)
@example(text="2", table=None)
@example(text="", table={"cell": float("nan")})
@example(text="", table={})
def test_predict_conf_is_a_threshold_in_0_1_or_one_line(text, table):
    from rcnn_cli.predict.runner import read_conf

    with scratch() as work:
        (work / "w.ckpt").write_bytes(b"")
        if table is not None:
            text = "t.json"
            (work / text).write_bytes(table if isinstance(table, bytes) else json.dumps(table).encode())
        # no inputs: an accepted --conf stops at "no images", before any model
        code, _, err = rcnn("predict", "--weights", "w.ckpt", f"--conf={text}", "--", "no-such-picture.png")
        line = one_line(err)
        assert code == 2
        if line.startswith("error: --conf"):
            assert "must be" in line or "thresholds.json" in line, line
            return
        assert "no images or videos found" in line, line
        conf = read_conf(text)
        thresholds = list(conf.values()) if isinstance(conf, dict) else [conf]
        assert thresholds and all(finite(t) and 0 <= t <= 1 for t in thresholds), (text, conf)


# --------------------------------------------------------------------------------------------------------
# 3. Malformed annotation records. The property is the same for every format: what the reader keeps is a
# box a detector can train on (finite, inside the image it belongs to, positive width and height, one of
# the dataset's classes), and the only error it may raise is one DatasetError line.

SIZES = [(64, 48), (40, 40)]
NUMBER_TEXT = st.one_of(st.integers(-80, 120).map(str), st.floats(-100, 200).map(repr),
                        st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e400", "99999999999999999999", "", "abc",
                                         " 12 ", "1,5", "0x10", "1e308", "-0"]))


def numbers() -> st.SearchStrategy:
    """A JSON number a tool might write, or something else where a number belongs."""
    return st.one_of(st.integers(-80, 120), st.floats(-100, 200), st.sampled_from(
        [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 10**30, 2**64, 10**400, True, None, "12", [1]]))


def assert_trainable(loaded, true_sizes: dict[str, tuple[int, int]]) -> None:
    from rcnn_cli.data.inspection.check import build_report

    for records in loaded.splits.values():
        for record in records:
            boxes = np.asarray(record.boxes, np.float64)
            assert boxes.shape == (len(record.labels), 4)
            assert np.isfinite(boxes).all(), boxes
            width, height = record.width, record.height
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all(), boxes
            assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all(), (boxes, width, height)
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all(), boxes
            assert ((record.labels >= 1) & (record.labels <= len(loaded.class_names))).all(), record.labels
    # A size declared in the annotation is trusted at load (no image opened); one that is not the
    # picture's is what `rcnn data check` must then name.
    report = build_report(loaded)
    flagged = {e.split(":")[0] for p in report["problems"] if p["kind"] == "wrong_declared_size" for e in p["examples"]}
    for records in loaded.splits.values():
        for record in records:
            if record.size_known and (record.width, record.height) != true_sizes[Path(record.path).name]:
                assert str(record.path) in flagged, (record.path, report["problems"])


def load_or_one_line(cfg, true_sizes):
    from rcnn_cli.data.readers.load import load_dataset

    try:
        loaded = load_dataset(cfg, ("train",))
    except DatasetError as err:
        assert "\n" not in str(err), str(err)
        return
    assert_trainable(loaded, true_sizes)


@pytest.fixture(scope="module")
def formats_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("records")


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def voc_cfg(formats_root):
    """Composed once (composing is a quarter second): every example rewrites the same two folders."""
    return compose("dataset=voc", f"dataset.images={formats_root}/voc/img",
                   f"dataset.annotations={formats_root}/voc/xml", "dataset.val_fraction=0",
                   "dataset.class_names=[cell,dog]").dataset


def plausible_xywh() -> st.SearchStrategy:
    """x, y, width, height around a 64x48 or 40x40 image: a box with some area, inside, across the border or
    outside: what a careless tool writes. Most generated boxes are such, so that the hostile values (empty,
    negative, NaN...) hide among boxes a reader would keep."""
    side = st.one_of(st.integers(1, 90), st.floats(0.5, 90))
    corner = st.one_of(st.integers(-20, 80), st.floats(-20, 80))
    return st.tuples(corner, corner, side, side).map(list)


def as_corners(xywh: list) -> list:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def xml_objects() -> st.SearchStrategy:
    hostile = st.lists(st.one_of(st.none(), NUMBER_TEXT), min_size=4, max_size=4)
    box = st.one_of(plausible_xywh().map(lambda b: [repr(v) for v in as_corners(b)]), hostile)
    return st.lists(st.tuples(st.sampled_from(["cell", "dog", "cat", "", " cell ", "[bold]"]), box,
                              st.sampled_from(["0", "1", "x", None])), max_size=4)


def voc_xml(filename, size, objects) -> str:
    def element(tag, value):
        return "" if value is None else f"<{tag}>{value}</{tag}>"

    parts = [element("filename", filename), "<size>" + element("width", size[0]) + element("height", size[1])
             + "<depth>3</depth></size>" if size is not None else ""]
    for name, coords, difficult in objects:
        box = "".join(element(tag, value) for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), coords))
        parts.append(f"<object>{element('name', name)}{element('difficult', difficult)}<bndbox>{box}</bndbox></object>")
    return "<annotation>" + "".join(parts) + "</annotation>"


@settings(max_examples=budget(3))
@given(files=st.lists(st.tuples(
    st.sampled_from(SIZES),
    st.sampled_from(["own", "missing", "absent", "../escape.png", "/etc/passwd", "other"]),
    st.one_of(st.none(), st.sampled_from(["true"]), st.tuples(NUMBER_TEXT, NUMBER_TEXT)),
    xml_objects(),
    st.sampled_from(["whole", "whole", "whole", "truncated", "garbage", "empty"]), st.binary(max_size=40)),
    min_size=1, max_size=3))
@example(files=[((64, 48), "own", "true", [("cell", ["-5", "10", "1e400", "20"], "0")], "whole", b"")])
def test_voc_records_are_trainable_or_one_line(voc_cfg, formats_root, files):
    img, xml = fresh(formats_root / "voc" / "img"), fresh(formats_root / "voc" / "xml")
    sizes = {}
    for i, (size, image, declared, objects, damage, garbage) in enumerate(files):
        stem = f"f{i}"
        if image != "missing":
            picture(img / f"{stem}.png", size, seed=i)
            sizes[f"{stem}.png"] = size
        filename = {"own": f"{stem}.png", "missing": f"{stem}.png", "absent": None, "other": "f0.png"}.get(image, image)
        text = voc_xml(filename, size if declared == "true" else declared, objects)
        data = {"whole": text.encode(), "truncated": text.encode()[: len(text) // 2], "garbage": garbage,
                "empty": b""}[damage]
        (xml / f"{stem}.xml").write_bytes(data)
    load_or_one_line(voc_cfg, sizes)


@pytest.fixture(scope="module")
def coco_cfg(formats_root):
    return compose("dataset=coco", f"dataset.train_json={formats_root}/coco/a.json",
                   f"dataset.train_images={formats_root}/coco/img", "dataset.val_fraction=0").dataset


COCO_FIELDS = [("images", 0, "id"), ("images", 1, "id"), ("images", 0, "file_name"), ("images", 1, "file_name"),
               ("images", 0, "width"), ("images", 1, "height"), ("annotations", 0, "bbox"), ("annotations", 1, "bbox"),
               ("annotations", 0, "image_id"), ("annotations", 1, "category_id"), ("annotations", 0, "iscrowd"),
               ("categories", 0, "id"), ("categories", 1, "name"), ("images", 0), ("annotations", 0),
               ("categories", 0), ("images",), ("annotations",), ("categories",)]


@st.composite
def coco_document(draw) -> object:
    """A sound two-image, two-class document, then one or two of its fields (or whole entries, or whole
    lists) replaced by hostile values: a file broken in one place is the usual case, and the sound rest
    keeps boxes for the property to check."""
    known = st.sampled_from([1, 2])
    annotations = draw(st.lists(st.fixed_dictionaries({"image_id": known, "category_id": known,
                                                        "bbox": plausible_xywh(), "iscrowd": st.just(0)}), max_size=5))
    document = {"images": [{"id": 1, "file_name": "f0.png", "width": 64, "height": 48},
                           {"id": 2, "file_name": "f1.png", "width": 40, "height": 40}],
                "annotations": [{"id": i, **a} for i, a in enumerate(annotations)],
                "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "dog"}]}
    hostile = st.one_of(numbers(), st.sampled_from(["gone.png", "../x.png", "/etc/passwd", "", "[bold]", {}, []]),
                        st.lists(numbers(), max_size=6))
    for field in draw(st.lists(st.sampled_from(COCO_FIELDS), min_size=1, max_size=2)):
        *path, last = field
        node = document
        for step in path:
            node = node[step] if isinstance(node, dict) or (isinstance(node, list) and step < len(node)) else None
            if node is None:
                break
        if isinstance(node, dict) or (isinstance(node, list) and last < len(node)):
            node[last] = draw(hostile)
    return document


def true_size_of(declared: dict) -> tuple[int, int]:
    """The picture a COCO entry names is drawn at its declared size when that is a sensible one, so that
    the property sees both right and wrong declarations."""
    width, height = declared.get("width"), declared.get("height")
    sane = all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 96 for v in (width, height))
    return (width, height) if sane else (64, 48)


@settings(max_examples=budget(3))
@given(document=coco_document(), damage=st.integers(0, 9).map(lambda i: {0: "truncated", 1: "garbage", 2: "empty"}.get(
    i, "whole")),
       garbage=st.binary(max_size=40))
@example(document={"images": [{"id": float("inf"), "file_name": "f0.png"}]}, damage="whole", garbage=b"")
@example(document={"images": [{"id": 1, "file_name": "f0.png", "width": float("inf"), "height": 48}]},
         damage="whole", garbage=b"")
@example(document={"images": [{"id": 1, "file_name": "f0.png", "width": 10**400, "height": 48}]},
         damage="whole", garbage=b"")
@example(document={"images": [], "annotations": [{"image_id": [1]}]}, damage="whole", garbage=b"")
def test_coco_records_are_trainable_or_one_line(coco_cfg, formats_root, document, damage, garbage):
    img = fresh(formats_root / "coco" / "img")
    sizes = {}
    entries = document.get("images") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if name in ("f0.png", "f1.png") and name not in sizes:
            sizes[name] = true_size_of(entry)
            picture(img / name, sizes[name])
    text = json.dumps(document)
    data = {"whole": text.encode(), "truncated": text.encode()[: len(text) // 2], "garbage": garbage,
            "empty": b""}[damage]
    (formats_root / "coco" / "a.json").write_bytes(data)
    load_or_one_line(coco_cfg, sizes)


@pytest.fixture(scope="module")
def yolo_cfg(formats_root):
    return compose("dataset=yolo", f"dataset.root={formats_root}/yolo", "dataset.val_fraction=0").dataset


def yolo_lines() -> st.SearchStrategy:
    field = st.one_of(st.floats(-0.5, 1.5).map(repr), st.sampled_from(["0.5", "0", "1", "nan", "inf", "-inf", "1e400",
                                                                       "abc", "", "-0.1", "1e-9"]))
    cls = st.one_of(st.integers(-2, 4).map(str), st.sampled_from(["x", "1.0", "99999999999999999999", ""]))
    hostile = st.tuples(cls, st.lists(field, min_size=0, max_size=7)).map(lambda t: " ".join([t[0], *t[1]]))
    centre, side = st.floats(-0.3, 1.3), st.one_of(st.floats(0.001, 1.2), st.floats(-0.1, 0))
    usual = st.tuples(st.integers(0, 1), centre, centre, side, side).map(lambda t: " ".join(map(repr, t)))
    return st.lists(st.one_of(usual, usual, hostile), max_size=4).map("\n".join)


DATA_YAML = ["names: [cell, dog]\n", "names: {0: cell, 1: dog}\n", "names: cell\n", "names: 5\n", "names:\n",
             "names: {a: cell}\n", "names: [cell, dog\n", "nc: 2\n", "- a\n- b\n", "names: [[1], {x: 2}]\n", ""]


@settings(max_examples=budget(3))
@given(data_yaml=st.sampled_from(DATA_YAML), labels=st.lists(st.one_of(yolo_lines(), st.binary(max_size=30)),
                                                             min_size=1, max_size=3))
@example(data_yaml="names: 5\n", labels=["0 0.5 0.5 0.2 0.2"])
def test_yolo_records_are_trainable_or_one_line(yolo_cfg, formats_root, data_yaml, labels):
    root = fresh(formats_root / "yolo")
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(data_yaml)
    sizes = {}
    for i, label in enumerate(labels):
        sizes[f"f{i}.png"] = SIZES[i % len(SIZES)]
        picture(root / "images" / "train" / f"f{i}.png", sizes[f"f{i}.png"], seed=i)
        target = root / "labels" / "train" / f"f{i}.txt"
        target.write_bytes(label) if isinstance(label, bytes) else target.write_text(label)
    load_or_one_line(yolo_cfg, sizes)
