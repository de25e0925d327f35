"""K-fold cross-validation: the folds of a real file list keep duplicate pictures together and every
image in exactly one fold; a wrong K is one line; the summary is the hand-computed mean and sample
std; a half-finished ``--folds`` run continues where it stopped."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from helpers import BCCD, TINY_TRAIN, require_shared, run_rcnn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rcnn_cli.data.errors import DatasetError
from rcnn_cli.data.folds import duplicate_sets, plan_folds
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config

# BCCD frames 37 and 38 are two shots of one field (the leakage `rcnn data check` reports); the copies
# below add an exact duplicate, a re-encoded near duplicate and a three-way set.
FIRST_IMAGES = 24


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[set[str]]]:
    """A flat VOC copy (images/ + xml/) of the first BCCD pictures plus 37 and 38, with planted duplicates;
    returns the folder and the sets of file names that must share a fold."""
    require_shared()
    root = tmp_path_factory.mktemp("folds")
    images, xml = root / "images", root / "xml"
    images.mkdir()
    xml.mkdir()
    stems = sorted(p.stem for p in (BCCD / "JPEGImages").glob("*.jpg"))[:FIRST_IMAGES]
    stems += ["BloodImage_00037", "BloodImage_00038"]
    for stem in stems:
        shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", images / f"{stem}.jpg")
        shutil.copy(BCCD / "Annotations" / f"{stem}.xml", xml / f"{stem}.xml")

    def copy_as(stem: str, new: str, reencode: bool = False) -> None:
        if reencode:      # another file, the same picture: a near duplicate (quality 70, 2% smaller)
            picture = Image.open(images / f"{stem}.jpg")
            picture.resize((628, 471)).resize(picture.size).save(images / f"{new}.jpg", quality=70)
        else:
            shutil.copy(images / f"{stem}.jpg", images / f"{new}.jpg")
        text = (xml / f"{stem}.xml").read_text().replace(f"{stem}.jpg", f"{new}.jpg")
        (xml / f"{new}.xml").write_text(text)

    copy_as(stems[1], "copy_exact")
    copy_as(stems[2], "copy_near", reencode=True)
    copy_as(stems[3], "copy_three_a")
    copy_as(stems[3], "copy_three_b", reencode=True)
    sets = [{f"{stems[1]}.jpg", "copy_exact.jpg"}, {f"{stems[2]}.jpg", "copy_near.jpg"},
            {f"{stems[3]}.jpg", "copy_three_a.jpg", "copy_three_b.jpg"},
            {"BloodImage_00037.jpg", "BloodImage_00038.jpg"}]
    return root, sets


def flat_voc(root: Path, *more: str):
    return load_config(["dataset=voc", f"dataset.images={root / 'images'}", f"dataset.annotations={root / 'xml'}",
                        *more]).dataset


@pytest.fixture(scope="module")
def file_list(planted):
    """The real file list (30 pictures) and its duplicate sets as data check finds them, hashed once."""
    root, _ = planted
    train = load_dataset(flat_voc(root, "dataset.folds=2"), ("train",)).splits["train"]
    names = [r.path.name for r in train]
    return names, duplicate_sets([r.path for r in train])


def test_the_planted_and_the_natural_duplicates_are_found(planted, file_list):
    _, sets = planted
    names, groups = file_list
    assert sorted(sorted(names[k] for k in group) for group in groups) == sorted(sorted(s) for s in sets)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folds=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_every_image_is_in_one_fold_and_no_duplicate_set_is_split(file_list, folds, seed):
    names, groups = file_list
    units = len(names) - sum(len(g) for g in groups) + len(groups)      # 25: a duplicate set is one unit
    if folds > units:
        with pytest.raises(DatasetError, match=f"use at most dataset.folds={units}$"):
            plan_folds(len(names), folds, seed, groups)
        return
    plan = plan_folds(len(names), folds, seed, groups)
    held = sorted(k for part in plan.parts for k in part)
    assert held == list(range(len(names)))                     # each image once, none lost
    fold_of = {k: f for f, part in enumerate(plan.parts) for k in part}
    for group in groups:
        assert len({fold_of[k] for k in group}) == 1, [names[k] for k in group]
    sizes = [len(part) for part in plan.parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= max(len(g) for g in groups)


def test_the_folds_a_run_loads_cover_the_training_images_once(planted):
    """What each fold run trains and validates on (load_dataset with dataset.fold), not only the plan."""
    root, sets = planted
    vals = []
    for fold in (1, 2, 3):
        loaded = load_dataset(flat_voc(root, "dataset.folds=3", f"dataset.fold={fold}"), ("train", "val"))
        train, val = ({r.path.name for r in loaded.splits[s]} for s in ("train", "val"))
        assert not train & val and len(train | val) == FIRST_IMAGES + 2 + 4
        assert all(s <= val or not s & val for s in sets)
        assert any(f"fold {fold} of 3" in note for note in loaded.notes)
        vals.append(val)
    assert len(set.union(*vals)) == sum(map(len, vals)) == FIRST_IMAGES + 2 + 4     # the folds' val sets: disjoint


def test_a_fold_split_is_the_same_every_time_and_moves_with_the_seed(planted):
    root, _ = planted

    def val(*more):
        loaded = load_dataset(flat_voc(root, "dataset.folds=3", "dataset.fold=2", *more), ("val",))
        return sorted(r.path.name for r in loaded.splits["val"])

    assert val() == val()
    assert val() != val("dataset.split_seed=1")


def test_more_folds_than_images_is_one_line_and_exit_2_before_any_folder(tmp_path):
    require_shared()
    out = run_rcnn("train", "--folds", "206", "dataset=bccd", f"dataset.root={BCCD}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().count("\n") == 0
    assert "dataset.folds=206: more folds than the 205 training images can fill; use at most dataset.folds=205" in (
        " ".join(out.stderr.split()))
    assert not (tmp_path / "runs").exists()       # refused before a run folder was made


def test_fewer_than_two_folds_is_refused_by_the_settings_rule():
    from rcnn_cli.commands import crossval, train
    from rcnn_cli.settings.schema import ConfigError

    with pytest.raises(ConfigError, match=r"^dataset.folds=1: must be at least 2 \(cross-validation needs"):
        crossval.run(train.TrainOptions([*TINY_TRAIN], folds=1))


def test_more_folds_than_pictures_counts_duplicates_once():
    with pytest.raises(DatasetError, match=r"more folds than the 4 training images \(3 with each set of duplicates"):
        plan_folds(4, 4, 0, [[0, 1]])


def test_the_summary_is_the_mean_and_sample_std_over_the_folds():
    from rcnn_cli.commands.crossval import summarise

    summary = summarise([{"val/map": 0.5, "val/map_large": -1.0, "val/loss": 1.0},
                         {"val/map": 0.6, "val/map_large": 0.2, "val/loss": 2.0},
                         {"val/map": 0.7, "val/map_large": 0.4, "val/loss": 4.0}])
    # by hand: mean 0.6, deviations -0.1, 0, 0.1 -> sample variance 0.02 / 2 = 0.01
    assert summary["val/map"]["mean"] == pytest.approx(0.6) and summary["val/map"]["std"] == pytest.approx(0.1)
    # -1 is COCO's "undefined": two folds count, mean 0.3, std sqrt(0.02 / 1)
    assert summary["val/map_large"] == {"mean": pytest.approx(0.3), "std": pytest.approx(math.sqrt(0.02)),
                                        "folds": 2}
    # 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9 -> variance 21/9
    assert summary["val/loss"]["mean"] == pytest.approx(7 / 3)
    assert summary["val/loss"]["std"] == pytest.approx(math.sqrt(21 / 9))


def test_the_printed_table_has_a_row_per_fold_then_the_mean_and_std(capsys):
    from rcnn_cli.commands import crossval

    rows = [{"val/map": 0.5, "val/map_50": 0.9}, {"val/map": 0.6, "val/map_50": 0.8},
            {"val/map": 0.7, "val/map_50": 1.0}]
    folds = [crossval.FoldResult(k + 1, Path(f"cv/fold-{k + 1}"), None, m, "trained") for k, m in enumerate(rows)]
    crossval.print_table(crossval.CrossValResult(Path("cv"), folds, crossval.summarise(rows), None))
    lines = [" ".join(line.replace("│", " ").split()) for line in capsys.readouterr().out.splitlines()]
    assert [line for line in lines if line[:1].isdigit()] == [
        "1 0.5000 0.9000 fold-1 (trained)", "2 0.6000 0.8000 fold-2 (trained)", "3 0.7000 1.0000 fold-3 (trained)"]
    # by hand: map 0.6 ± 0.1 as above; map_50 mean 0.9, deviations 0, -0.1, 0.1 -> the same std 0.1
    assert "mean 0.6000 0.9000" in lines and "± std 0.1000 0.1000" in lines


class PowerCut(Exception):
    """Stands for the machine stopping in the middle of a fold."""


def test_a_half_finished_cross_validation_continues_where_it_stopped(tmp_path):
    """Two folds of the tiny experiment, two short epochs each; the run stops as fold 2 starts its second.
    Run again: fold 1 is kept as it is, fold 2 resumes from its last.ckpt and finishes its second epoch."""
    import lightning as L
    import torch

    from rcnn_cli.commands.crossval import cross_validate

    class StopInFoldTwo(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            if "fold-2" in str(trainer.default_root_dir) and trainer.current_epoch == 1:
                raise PowerCut

    parent = tmp_path / "cv"
    overrides = [*TINY_TRAIN, "dataset.folds=2", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=2", f"run_dir={parent}"]
    with pytest.raises(PowerCut):
        cross_validate(overrides, callbacks=[StopInFoldTwo()])
    assert (parent / "fold-1" / "fold.json").is_file() and not (parent / "fold-2" / "fold.json").exists()
    first = torch.load(parent / "fold-2" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert first["epoch"] == 0
    kept = (parent / "fold-1" / "checkpoints" / "best.ckpt").stat().st_mtime_ns

    class FirstEpochs(L.Callback):
        started: dict[str, int] = {}

        def on_train_epoch_start(self, trainer, module):
            self.started.setdefault(Path(trainer.default_root_dir).name, trainer.current_epoch)

    result = cross_validate(overrides, callbacks=[FirstEpochs()])
    assert FirstEpochs.started == {"fold-2": 1}        # fold 1 not trained again; fold 2 went on at its 2nd epoch
    assert [f.how for f in result.folds] == ["kept", "resumed"]
    assert (parent / "fold-1" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == kept
    done = torch.load(parent / "fold-2" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert done["epoch"] == 1 and done["global_step"] == 2 * first["global_step"]
    assert done["rcnn_cli"]["dataset"]["fold"] == 2 and done["rcnn_cli"]["dataset"]["folds"] == 2
    # ensemble.yaml as --weights reads it: the two best checkpoints, listed relative to the file
    from rcnn_cli.model.source import read_ensemble

    assert "fold-1/checkpoints/best.ckpt" in (parent / "ensemble.yaml").read_text()      # relative, not absolute
    assert read_ensemble(parent / "ensemble.yaml") == [str(parent / f"fold-{k}" / "checkpoints" / "best.ckpt")
                                                      for k in (1, 2)]
    assert result.summary["val/map"]["folds"] == 2

    # The Python API takes the CLI's shape: --folds K as an argument, the overrides as typed; all kept now.
    from rcnn_cli import api

    again = api.cross_validate(2, [o for o in overrides if o != "dataset.folds=2"])
    assert [f.how for f in again.folds] == ["kept", "kept"]
    assert again.summary == json.loads((parent / "crossval.json").read_text())["summary"]


def test_continuing_with_other_settings_is_refused_in_one_line(tmp_path):
    """A fold trained one way and the next another would not be one cross-validation."""
    import lightning as L

    from rcnn_cli.commands.crossval import cross_validate
    from rcnn_cli.errors import UsageError

    class StopAtOnce(L.Callback):
        def on_train_start(self, trainer, module):
            raise PowerCut

    overrides = [*TINY_TRAIN, "dataset.folds=2", f"run_dir={tmp_path / 'cv'}"]
    with pytest.raises(PowerCut):
        cross_validate(overrides, callbacks=[StopAtOnce()])
    with pytest.raises(UsageError, match=r"was started with other settings \(optim.lr: 0.001 -> 0.002\); continue"):
        cross_validate([*overrides, "optim.lr=0.002"])
