"""Test-time augmentation, ensembles and class-agnostic NMS (issue 29).

TTA and ensemble fusion are checked on a real BCCD picture and its labelled boxes against numbers worked
by hand (fake detectors return the labels moved by known amounts); the commands and the Python API run a
tiny checkpoint trained on BCCD, in-process."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from helpers import BCCD, TINY_TRAIN, bccd_images, image_folder, require_shared
from torch import nn

from rcnn_cli.api import Detector, to_chw_tensor
from rcnn_cli.errors import UsageError
from rcnn_cli.inference.ensemble import ensemble_predictor, write_ensemble
from rcnn_cli.inference.predictor import Predictor
from rcnn_cli.inference.tiling import detect_tiled
from rcnn_cli.inference.tta import FusionRule, tta_detect
from rcnn_cli.model.roi_heads import RoIHeads
from rcnn_cli.model.source import weights_source
from rcnn_cli.model.structures import Proposals
from rcnn_cli.settings.resolve import resolve
from rcnn_cli.settings.schema import ConfigError

CLASSES = ["RBC", "WBC", "Platelets"]
KEEP_ALL = FusionRule(score_threshold=0.0, max_detections=100)


def labelled(name: str = "BloodImage_00000") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(picture (3, H, W) uint8, its labelled boxes (N, 4), labels (N,)), read here from the VOC XML.
    In BloodImage_00000 no two labelled boxes overlap by more than IoU 0.2, so each stays its own cluster."""
    require_shared()
    root = ET.parse(BCCD / "Annotations" / f"{name}.xml").getroot()
    boxes, labels = [], []
    for item in root.iter("object"):
        box = item.find("bndbox")
        boxes.append([float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(CLASSES.index(item.find("name").text) + 1)
    return to_chw_tensor(BCCD / "JPEGImages" / f"{name}.jpg"), torch.tensor(boxes), torch.tensor(labels)


def mirrored(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


# --- test-time augmentation ------------------------------------------------------------------------

# Per scale factor: (shift in px of every coordinate, score unflipped, score flipped).
VIEWS = {0.8: (4.0, 0.5, 0.3), 1.0: (0.0, 0.9, 0.5), 1.2: (-2.0, 0.7, 0.4)}


class FakeModel:
    """Returns the labelled boxes of the real picture, shifted and scored as VIEWS says for the size the
    transform is set to, mirrored when it is handed the mirrored picture (as a model would see it)."""

    def __init__(self, picture, boxes, labels):
        self.picture, self.boxes, self.labels = picture, boxes, labels
        self.transform = SimpleNamespace(min_size=(416,), max_size=560)
        self.seen: list[tuple[float, bool]] = []

    def __call__(self, images):
        scale = self.transform.min_size[0] / 416
        assert self.transform.max_size == round(560 * scale)
        shift, plain_score, flipped_score = VIEWS[round(scale, 1)]
        out = []
        for image in images:
            flipped = torch.equal(image, self.picture.flip(-1))
            assert flipped or torch.equal(image, self.picture)
            self.seen.append((round(scale, 1), flipped))
            boxes = self.boxes + shift
            boxes = mirrored(boxes, image.shape[-1]) if flipped else boxes
            score = flipped_score if flipped else plain_score
            out.append({"boxes": boxes, "scores": torch.full((len(boxes),), score), "labels": self.labels})
        return out


def test_tta_maps_every_view_back_and_fuses_them_as_worked_by_hand():
    picture, boxes, labels = labelled()
    model = FakeModel(picture, boxes, labels)
    detect = tta_detect(model, model.transform, [0.8, 1.0, 1.2], KEEP_ALL)
    found = detect([picture])[0]
    assert sorted(model.seen) == [(s, f) for s in (0.8, 1.0, 1.2) for f in (False, True)]
    assert model.transform.min_size == (416,) and model.transform.max_size == 560     # restored
    # Each labelled box: 6 views, shifts +4 (scores 0.5, 0.3), 0 (0.9, 0.5), -2 (0.7, 0.4). Weighted shift
    # (4 * 0.8 + 0 * 1.4 - 2 * 1.1) / 3.3 = 1.0 / 3.3; score mean 3.3 / 6 = 0.55, found by 6 of 6 views.
    assert len(found["boxes"]) == len(boxes)
    order = torch.argsort(found["boxes"][:, 0] * 10_000 + found["boxes"][:, 1])
    expected_order = torch.argsort((boxes[:, 0] + 1 / 3.3) * 10_000 + boxes[:, 1] + 1 / 3.3)
    assert torch.allclose(found["boxes"][order], boxes[expected_order] + 1.0 / 3.3, atol=1e-3)
    assert torch.equal(found["labels"][order], labels[expected_order])
    assert torch.allclose(found["scores"], torch.full((len(boxes),), 0.55))


def test_a_box_seen_by_one_view_keeps_a_sixth_of_its_score():
    picture, boxes, labels = labelled()
    model = FakeModel(picture, boxes[:1], labels[:1])
    only_plain = lambda images: [d if s == 1.0 else {k: v[:0] for k, v in d.items()}  # noqa: E731
                                 for d, s in zip(model(images), [model.transform.min_size[0] / 416] * len(images))]
    found = tta_detect(only_plain, model.transform, [0.8, 1.0, 1.2], KEEP_ALL)([picture])[0]
    # at scale 1.0 both the plain (0.9) and the flipped (0.5) view find it, shift 0: mean 0.7 x 2 of 6 views
    assert torch.allclose(found["scores"], torch.tensor([0.7 * 2 / 6]))
    assert torch.allclose(found["boxes"], boxes[:1], atol=1e-4)


@pytest.mark.parametrize(("agnostic", "kept"), [("false", [1, 2]), ("true", [1])])
def test_tta_fusion_follows_the_models_agnostic_nms(agnostic, kept):
    """Two classes on one labelled cell in every view: WBF fuses per class, so both survive it; with
    model.box_nms_agnostic=true the fused set is then cut to one, as the model's own NMS would."""
    picture, boxes, _ = labelled()
    cell = torch.cat([boxes[:1], boxes[:1] + 1])
    found = {"scores": torch.tensor([0.9, 0.6]), "labels": torch.tensor([1, 2])}
    detect = lambda images: [{**found, "boxes": cell if torch.equal(image, picture)  # noqa: E731
                              else mirrored(cell, image.shape[-1])} for image in images]
    rule = FusionRule.of(resolve("predict", [f"model.box_nms_agnostic={agnostic}"]).cfg.model)
    transform = SimpleNamespace(min_size=(416,), max_size=560)
    assert tta_detect(detect, transform, [1.0], rule)([picture])[0]["labels"].tolist() == kept


# --- ensembles --------------------------------------------------------------------------------------

def member(detections, class_names=CLASSES, runs_as="fp32") -> Predictor:
    return Predictor(lambda images: [detections for _ in images], list(class_names), runs_as, torch.device("cpu"))


def test_ensemble_fuses_its_members_as_worked_by_hand():
    picture, boxes, labels = labelled()
    stray = torch.tensor([[600.0, 0.0, 630.0, 30.0]])      # overlaps no labelled box of the picture
    assert float(torchvision.ops.box_iou(stray, boxes).max()) == 0
    first = member({"boxes": boxes, "scores": torch.full((len(boxes),), 0.8), "labels": labels})
    second = member({"boxes": torch.cat([boxes + 3, stray]), "scores": torch.full((len(boxes) + 1,), 0.4),
                     "labels": torch.cat([labels, torch.tensor([2])])})
    fused = ensemble_predictor([first, second], ["a.ckpt", "b.ckpt"], KEEP_ALL)
    found = fused.detect([picture])[0]
    # labelled boxes: shift 3 * 0.4 / 1.2 = 1 px, score (0.8 + 0.4) / 2 x 2 of 2 members = 0.6;
    # the stray box: one member of two, 0.4 / 2 = 0.2, last.
    assert len(found["boxes"]) == len(boxes) + 1
    assert torch.allclose(found["scores"], torch.tensor([0.6] * len(boxes) + [0.2]))
    assert torch.allclose(found["boxes"][-1], stray[0]) and int(found["labels"][-1]) == 2
    order = torch.argsort(found["boxes"][:-1, 0] * 10_000 + found["boxes"][:-1, 1])
    expected = torch.argsort(boxes[:, 0] * 10_000 + boxes[:, 1])
    assert torch.allclose(found["boxes"][:-1][order], boxes[expected] + 1, atol=1e-4)
    assert fused.runs_as == "ensemble of 2 (fp32, fp32)"


def test_an_ensemble_of_other_classes_is_refused_in_one_line():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(UsageError, match=r"^ensemble: b.ckpt has classes \['cat', 'dog'\] but a.ckpt has "):
        ensemble_predictor([member(empty), member(empty, ["cat", "dog"])], ["a.ckpt", "b.ckpt"], KEEP_ALL)


def members_of(weights) -> list[str] | None:
    """The member files when ``weights`` names an ensemble, by the one decision, else None."""
    source = weights_source(weights)
    return [member.given for member in source.members] if source.kind == "ensemble" else None


def test_an_ensemble_is_named_by_a_list_or_an_ensemble_yaml(tmp_path):
    folds = tmp_path / "folds"
    for fold in ("fold-1", "fold-2"):
        (folds / fold).mkdir(parents=True)
        (folds / fold / "best.ckpt").write_bytes(b"x")
    listed = [str(folds / "fold-1" / "best.ckpt"), str(folds / "fold-2" / "best.ckpt")]
    assert members_of(",".join(listed)) == listed
    assert members_of(listed) == listed
    assert members_of(listed[0]) is None                # one file is no ensemble
    assert [m.kind for m in weights_source(listed).members] == ["file", "file"]     # each member decided too
    written = write_ensemble(folds / "ensemble.yaml", listed)
    assert written.read_text() == "weights:\n- fold-1/best.ckpt\n- fold-2/best.ckpt\n"   # relative: the folder may move
    moved = folds.rename(tmp_path / "moved")
    assert members_of(moved / "ensemble.yaml") == [str(moved / "fold-1" / "best.ckpt"),
                                                  str(moved / "fold-2" / "best.ckpt")]
    with pytest.raises(UsageError, match=r"best.ckpt,missing.ckpt: missing.ckpt: no such file$"):
        members_of(f"{moved / 'fold-1' / 'best.ckpt'},missing.ckpt")
    (tmp_path / "bad.yaml").write_text("- a.ckpt\n")
    with pytest.raises(UsageError, match=r"holds `weights:`, a list of weights files"):
        members_of(tmp_path / "bad.yaml")
    with pytest.raises(UsageError, match=r"e.g. a.ckpt,b.ckpt"):
        members_of(f"{listed[0]},")


# --- settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "message"), [
    ("model.tta=yes", "model.tta='yes': must be true or false"),
    ("model.tta_scales=[]", "model.tta_scales=[]: must list at least 1 value"),
    ("model.tta_scales=[0.1,1.0]", "model.tta_scales=[0.1, 1.0]: must be in [0.25, 4.0]"),
    ("model.tta_scales=[small]", "model.tta_scales=['small']: must be a list of numbers"),
    ("model.box_nms_agnostic=1", "model.box_nms_agnostic=1: must be true or false"),
    ("model.box_nms_agnostic_=true", "unknown config key 'model.box_nms_agnostic_'; did you mean box_nms_agnostic"),
])
def test_a_wrong_tta_or_nms_value_is_one_line(override, message):
    with pytest.raises(ConfigError) as caught:
        resolve("predict", [override])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize("command", ["train", "export", "benchmark"])
def test_tta_where_it_would_be_ignored_is_refused(command):
    with pytest.raises(ConfigError, match=f"runs in rcnn eval, predict and serve \\(--tta\\), not in {command}$"):
        resolve(command, ["model.tta=true"])


def test_tta_on_an_exported_file_is_refused_in_one_line(tmp_path):
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"")
    with pytest.raises(UsageError, match="is an exported file, whose resize is baked in"):
        Detector.load(exported, tta=True)


# --- class-agnostic NMS -----------------------------------------------------------------------------

class _Table(nn.Module):
    """The box predictor's output for the two proposals, fixed: logits are log-probabilities, so the
    softmax gives exactly the probabilities written below; zero deltas keep every class's box = proposal."""

    def forward(self, pooled):
        probabilities = torch.tensor([[0.1, 0.7, 0.2], [0.1, 0.3, 0.6]])   # background, class 1, class 2
        return probabilities.log(), torch.zeros(2, 12)


def heads(agnostic: bool) -> RoIHeads:
    return RoIHeads(lambda features, rois, sizes: rois, nn.Identity(), _Table(), fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                    batch_size_per_image=8, positive_fraction=0.25, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
                    score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, nms_agnostic=agnostic)


@pytest.mark.parametrize(("agnostic", "expected"), [
    # class-aware: class 1 keeps proposal A (0.7 over B's 0.3), class 2 keeps B (0.6 over A's 0.2)
    (False, [(0, 1, 0.7), (1, 2, 0.6)]),
    # agnostic: A/class 1 (0.7) suppresses every other box, since A and B overlap by IoU 9 / 11 = 0.82 > 0.5
    (True, [(0, 1, 0.7)]),
])
def test_the_models_nms_is_per_class_or_over_all_classes(agnostic, expected):
    proposals = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]]])
    found = heads(agnostic).detect({}, Proposals(proposals, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool)),
                                   torch.tensor([[100, 100]]))
    got = [(int(torch.where((proposals[0] == box).all(1))[0]), int(label), round(float(score), 4))
           for box, label, score in zip(found.boxes, found.labels, found.scores)]
    assert got == expected


@pytest.mark.parametrize(("agnostic", "kept"), [(False, [1, 2]), (True, [1])])
def test_the_tile_merge_follows_the_models_nms(agnostic, kept):
    # one tile holds the whole 64 px picture: the merge NMS is all that acts on the two boxes (IoU 0.82)
    found = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]]),
             "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    merged = detect_tiled(lambda images: [found for _ in images], torch.zeros(3, 64, 64, dtype=torch.uint8),
                          tile=64, overlap=0.2, batch_size=4, nms_iou=0.5, nms_agnostic=agnostic)
    assert merged["labels"].tolist() == kept


def test_agnostic_nms_is_in_the_exported_graph(tmp_path):
    """A random 3-class model at box_score_thresh=0 finds each object once per class (same proposals, near
    boxes); agnostic NMS keeps one. The ONNX file must keep what the eager model keeps."""
    from rcnn_cli.export.exporters import write_onnx
    from rcnn_cli.export.verify import verify_export
    from rcnn_cli.inference.exported import OnnxDetector
    from rcnn_cli.ops.boxes import pairwise_iou

    images = [to_chw_tensor(path) for path in bccd_images(2)]
    small = [images[0], images[1][:, :400, :300].contiguous()]      # another size: nothing frozen by the trace
    found = {}
    for agnostic in (False, True):
        torch.manual_seed(0)
        detector = Detector(model="resnet18_fpn", num_classes=4, min_size=160, max_size=256, box_score_thresh=0.0,
                            fpn_channels=64, representation_size=128, box_nms_agnostic=agnostic, device="cpu",
                            precision="fp32")
        with torch.inference_mode():
            found[agnostic] = detector.model(small)
    # class-aware: boxes of other classes overlap above 0.5; agnostic: none do (the check compares something)
    for agnostic, detections in found.items():
        d = detections[0]
        iou = pairwise_iou(d["boxes"], d["boxes"]).fill_diagonal_(0)
        assert bool((iou > 0.5).any()) is (not agnostic)
    path = write_onnx(detector, tmp_path / "agnostic.onnx", images[0])
    runner = OnnxDetector(str(path), "cpu")
    assert verify_export(detector.model, runner, small).passed          # the export's own parity check
    for image in small:
        boxes = runner.detect([image])[0]["boxes"]
        assert len(boxes) > 1 and not bool((pairwise_iou(boxes, boxes).fill_diagonal_(0) > 0.5).any())


# --- the commands and the API on a checkpoint trained on BCCD -----------------------------------------

VAL_IMAGES = 12


@pytest.fixture(scope="module")
def small_bccd(tmp_path_factory) -> Path:
    """BCCD read in place through links, its train, val and test splits cut to 16, 12 and 4 pictures (scoring
    all 87 val pictures three times took minutes on the shared 2-core machine)."""
    require_shared()
    root = tmp_path_factory.mktemp("bccd-small")
    for folder in ("Annotations", "JPEGImages"):
        (root / folder).symlink_to(BCCD / folder, target_is_directory=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, count in (("train", 16), ("val", VAL_IMAGES), ("test", 4)):
        ids = (BCCD / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def bccd_checkpoint(tmp_path_factory, small_bccd) -> Path:
    """Two batches of training on BCCD (the tiny experiment's model): enough to detect something."""
    from rcnn_cli.commands import train

    run_dir = tmp_path_factory.mktemp("tta") / "runs" / "bccd"
    train.run(train.TrainOptions([*TINY_TRAIN, "dataset=bccd", f"dataset.root={small_bccd}", "trainer.max_epochs=1",
                                  "trainer.limit_train_batches=2", f"run_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def nudged(checkpoint: Path, out: Path) -> Path:
    """A copy of ``checkpoint`` whose box predictor is moved a little: another member for an ensemble."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = data["state_dict"]
    state["model.roi_heads.box_predictor.bbox_pred.bias"] += 0.3
    state["model.roi_heads.box_predictor.cls_score.bias"][1] += 1.0
    torch.save(data, out)
    return out


def predicted(out: Path) -> list[dict]:
    return json.loads((out / "predictions.json").read_text())


def test_predict_with_tta_and_an_ensemble_of_one_checkpoint_twice(bccd_checkpoint, tmp_path, capsys):
    from rcnn_cli.commands import predict

    inputs = image_folder(tmp_path / "in", bccd_images(2))
    run = lambda weights, out, **flags: predict.run(predict.PredictOptions(  # noqa: E731
        [str(inputs)], weights, ["device=cpu", "model.precision=fp32"], out=tmp_path / out, conf="0.01", draw=False,
        **flags))
    assert run(bccd_checkpoint, "single") == 0
    ensemble = write_ensemble(tmp_path / "ensemble.yaml", [bccd_checkpoint, bccd_checkpoint])
    assert run(str(ensemble), "twice") == 0
    assert "(ensemble of 2 (fp32, fp32) on cpu)" in capsys.readouterr().err
    single, twice = predicted(tmp_path / "single"), predicted(tmp_path / "twice")
    # NMS leaves no two boxes of a class above IoU 0.5, so each box fuses only with its copy: the same
    # box and score (mean of two equal scores x 2 of 2 members)
    assert sum(len(r["detections"]) for r in single) > 0
    assert [r["detections"] for r in twice] == [r["detections"] for r in single]
    assert run(bccd_checkpoint, "tta", tta=True) == 0
    with_tta = predicted(tmp_path / "tta")
    assert [r["detections"] for r in with_tta] != [r["detections"] for r in single]
    for result in with_tta:
        for d in result["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= result["width"] and 0 <= y1 < y2 <= result["height"] and d["score"] >= 0.01


def test_agnostic_nms_holds_through_predict_tiles_and_tta(bccd_checkpoint, tmp_path):
    from rcnn_cli.commands import predict
    from rcnn_cli.ops.boxes import pairwise_iou

    inputs = image_folder(tmp_path / "in", bccd_images(1))
    overlapping = {}
    for agnostic in ("false", "true"):
        out = tmp_path / agnostic
        overrides = ["device=cpu", "model.precision=fp32", "model.tta_scales=[1.0]",
                     f"model.box_nms_agnostic={agnostic}"]
        assert predict.run(predict.PredictOptions([str(inputs)], bccd_checkpoint, overrides, out=out, conf="0.0",
                                                  draw=False, tile=480, tta=True)) == 0
        boxes = [torch.tensor([d["box"] for d in r["detections"]]).reshape(-1, 4) for r in predicted(out)]
        overlapping[agnostic] = sum(int((pairwise_iou(b, b).fill_diagonal_(0) > 0.5).sum()) for b in boxes)
    # class-aware NMS leaves boxes of different classes on one cell; agnostic NMS, applied in the model, after
    # fusing TTA's views and when merging tiles, leaves none
    assert overlapping == {"false": overlapping["false"], "true": 0} and overlapping["false"] > 0


def test_eval_with_tta_and_the_api_take_the_same_settings(bccd_checkpoint, small_bccd, tmp_path, monkeypatch):
    from rcnn_cli.commands import evaluate
    from rcnn_cli.predict import ensemble

    fused = []
    spy = lambda predictors, *args: fused.append(len(predictors)) or ensemble_predictor(predictors, *args)  # noqa: E731
    monkeypatch.setattr(ensemble, "ensemble_predictor", spy)

    common = ["trainer.accelerator=cpu", "dataset.batch_size=6", f"dataset.root={small_bccd}"]
    other = nudged(bccd_checkpoint, tmp_path / "other.ckpt")
    plain = evaluate.run(evaluate.EvalOptions(bccd_checkpoint, common, out=tmp_path / "plain"))
    twice = evaluate.run(evaluate.EvalOptions(f"{bccd_checkpoint},{bccd_checkpoint}", common, out=tmp_path / "twice"))
    mixed = evaluate.run(evaluate.EvalOptions(f"{bccd_checkpoint},{other}", common, out=tmp_path / "mixed"))
    tta = evaluate.run(evaluate.EvalOptions(bccd_checkpoint, common, out=tmp_path / "tta", tta=True))
    assert {plain.num_images, twice.num_images, mixed.num_images, tta.num_images} == {VAL_IMAGES} and fused == [2, 2]
    ap = {name: result.report.summary()["map"] for name, result in
          (("plain", plain), ("twice", twice), ("mixed", mixed), ("tta", tta))}
    # one checkpoint twice scores what the checkpoint scores (through the predictor path); a second, other
    # member changes the figure, and so does TTA
    assert ap["twice"] == pytest.approx(ap["plain"], abs=1e-9)
    assert ap["mixed"] != ap["plain"] and ap["tta"] != ap["plain"]
    detector = Detector.load(bccd_checkpoint, tta=True, tta_scales=[1.0], device="cpu", precision="fp32")
    assert detector.runs_as == "fp32 + TTA (2 views)"
    detector.set_precision("auto")
    assert detector.runs_as.startswith("auto: ") and detector.runs_as.endswith(" + TTA (2 views)")
    assert Detector.load([bccd_checkpoint] * 2, device="cpu").runs_as.startswith("ensemble of 2")


def test_serve_builds_an_ensemble_with_tta(bccd_checkpoint):
    from rcnn_cli.commands import serve

    _, predictor = serve.build(serve.ServeOptions(f"{bccd_checkpoint},{bccd_checkpoint}",
                                                      ["device=cpu", "model.precision=fp32"], tta=True))
    assert predictor.runs_as.startswith("ensemble of 2 (") and predictor.runs_as.count("TTA (6 views)") == 2
    picture = to_chw_tensor(bccd_images(1)[0])
    assert predictor.detect([picture])[0]["boxes"].shape[1] == 4


def test_config_show_prints_every_ensemble_members_config(tiny_run, capsys):
    """`rcnn config show --weights a,b` shows what each member runs with (it showed the first member only)."""
    import yaml

    from rcnn_cli.cli import config_show

    best, last = (tiny_run / "checkpoints" / name for name in ("best.ckpt", "last.ckpt"))
    config_show(None, None, Path(f"{best},{last}"))
    documents = [yaml.safe_load(text) for text in capsys.readouterr().out.split("\n---\n") if text.strip()]
    assert [document["model"]["weights"] for document in documents] == [str(best), str(last)]
