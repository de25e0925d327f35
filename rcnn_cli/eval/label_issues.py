"""Likely label errors: the labelled boxes (and images) a model disagrees with most, ranked, so that
a user can open the worst twenty in a labelling tool (``rcnn data check --weights W``,
``rcnn eval --label-issues``).

Four kinds, from one image's detections (any score the model kept) and its labels, matched by IoU
as evaluation matches them (``matching.py``; MATCH_IOU = 0.5, NEAR_IOU = 0.1):

    missing_box    a detection that overlaps no labelled box at MATCH_IOU and that no other issue
                   explains: an object nobody labelled. rank = its score.
    wrong_label    a labelled box that a detection of another class covers (IoU >= MATCH_IOU) more
                   confidently than any detection of its own class. rank = s_other x (1 - s_own).
    badly_located  a labelled box whose best detection of its class (the box that detection fits best)
                   overlaps it only at IoU NEAR_IOU..MATCH_IOU, more confidently than any detection
                   that fits it. rank = s x (1 - IoU) x (1 - s_fit).
    spurious_box   a labelled box no detection backs: rank = recall_c x (1 - backing), backing the best
                   score x min(1, IoU / MATCH_IOU) of any detection (a neighbour's detection that grazes
                   the box backs it little), and recall_c the share of
                   the class's labelled boxes that the model does find (a detection of the class at
                   MATCH_IOU scoring CONFIDENT or more) on the same images: a box the model cannot see
                   counts for little where it misses many boxes of that class anyway.

Each labelled box gets at most one issue (the first kind that applies, in the order above after
missing_box). Ignored boxes (VOC difficult, COCO crowd) are never issues and explain detections
on them. An image's rank is 1 - prod(1 - rank) over its issues: the chance that it holds at least
one error, if each issue's rank were one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import nms

from .matching import MATCH_IOU, NEAR_IOU, as_numpy, pairwise_iou

KINDS = ("missing_box", "wrong_label", "badly_located", "spurious_box")
CONFIDENT = 0.5          # a detection at or above this score counts as the model finding the box
MIN_RANK = 0.1           # issues ranked lower are left out of the list
GALLERY = 20             # issues drawn in report.html


@dataclass
class LabelIssue:
    """One likely label error. box: xyxy pixels of the labelled box, or of the detection for
    missing_box; box_index: the box's position in the image's labels (None for missing_box);
    label: the labelled class (the detected one for missing_box); score: the model's confidence
    behind the issue; rank: how likely the label is wrong, 0..1; suggestion: what the model saw
    there ({"label": ...} and/or {"box": [...]})."""

    kind: str
    image: str
    index: int
    box: list[float]
    box_index: int | None
    label: str
    score: float
    rank: float
    suggestion: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Image:
    """One image as numpy arrays: detections (boxes, scores, labels) and labels (boxes, labels, ignore)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    truth: np.ndarray
    truth_labels: np.ndarray
    ignore: np.ndarray

    @classmethod
    def of(cls, prediction: dict, target: dict) -> _Image:
        truth_labels = as_numpy(target["labels"]).astype(np.int64)
        ignore = as_numpy(target.get("ignore", np.zeros(len(truth_labels), bool))).astype(bool)
        return cls(as_numpy(prediction["boxes"]).reshape(-1, 4).astype(np.float64),
                   as_numpy(prediction["scores"]).astype(np.float64), as_numpy(prediction["labels"]).astype(np.int64),
                   as_numpy(target["boxes"]).reshape(-1, 4).astype(np.float64), truth_labels, ignore)

    def iou(self) -> np.ndarray:
        """(labels, detections) IoU."""
        if not len(self.truth) or not len(self.boxes):
            return np.zeros((len(self.truth), len(self.boxes)))
        return pairwise_iou(self.truth, self.boxes)


def class_recall(images: list[_Image], num_classes: int) -> np.ndarray:
    """(C + 1,) per label: the share of its (not ignored) labelled boxes that a detection of the same
    class covers at MATCH_IOU with a score of CONFIDENT or more; 0 for classes without boxes."""
    found, total = np.zeros(num_classes + 1), np.zeros(num_classes + 1)
    for image in images:
        iou = image.iou()
        same = image.truth_labels[:, None] == image.labels[None, :]
        covered = ((iou >= MATCH_IOU) & same & (image.scores[None, :] >= CONFIDENT)).any(axis=1)
        for label, hit, ignored in zip(image.truth_labels, covered, image.ignore):
            if not ignored:
                total[label] += 1
                found[label] += hit
    return np.divide(found, total, out=np.zeros_like(found), where=total > 0)


def rank_label_issues(predictions: list[dict], targets: list[dict], class_names: list[str],
                      image_names: list[str | Path]) -> list[LabelIssue]:
    """Every issue of rank MIN_RANK or more, highest rank first. predictions and targets as for
    ``eval.evaluate`` (targets may carry ``ignore``); image_names[i]: the file of image i."""
    images = [_Image.of(p, t) for p, t in zip(predictions, targets, strict=True)]
    recall = class_recall(images, len(class_names))
    issues = []
    for index, image in enumerate(images):
        issues += _image_issues(image, index, str(image_names[index]), class_names, recall)
    kept = [issue for issue in issues if issue.rank >= MIN_RANK]
    return sorted(kept, key=lambda issue: (-issue.rank, issue.index, issue.box_index if issue.box_index is not None
                                           else -1, issue.kind))


def _image_issues(image: _Image, index: int, name: str, class_names: list[str], recall: np.ndarray
                  ) -> list[LabelIssue]:
    iou = image.iou()
    same = image.truth_labels[:, None] == image.labels[None, :]
    fits = iou >= MATCH_IOU
    explained = np.zeros(len(image.boxes), bool)          # detections an issue of a labelled box accounts for
    issues = []

    def issue(kind: str, where, box_index, label: int, score: float, rank: float, suggestion=None) -> None:
        issues.append(LabelIssue(kind, name, index, [round(float(v), 2) for v in where], box_index,
                                 class_names[label - 1], round(float(score), 4), round(float(rank), 4),
                                 suggestion or {}))

    for g in np.flatnonzero(~image.ignore):
        own = np.where(fits[g] & same[g], image.scores, 0.0).max(initial=0.0)
        other = np.where(fits[g] & ~same[g], image.scores, 0.0)
        if other.max(initial=0.0) > own:
            d = int(other.argmax())
            explained[d] = True
            issue("wrong_label", image.truth[g], int(g), image.truth_labels[g], image.scores[d],
                  image.scores[d] * (1 - own), {"label": class_names[image.labels[d] - 1]})
            continue
        near = _best_fit_in_band(image, iou, same, g)
        if near is not None and image.scores[near] > own:
            explained[near] = True
            issue("badly_located", image.truth[g], int(g), image.truth_labels[g], image.scores[near],
                  image.scores[near] * (1 - iou[g, near]) * (1 - own),
                  {"box": [round(float(v), 2) for v in image.boxes[near]], "iou": round(float(iou[g, near]), 3)})
            continue
        backing = (image.scores * np.minimum(1.0, iou[g] / MATCH_IOU)).max(initial=0.0)
        issue("spurious_box", image.truth[g], int(g), image.truth_labels[g], backing,
              recall[image.truth_labels[g]] * (1 - backing))
    unlabelled = ~explained & ~(fits.any(axis=0) if len(image.truth) else np.zeros(len(image.boxes), bool))
    candidates = np.flatnonzero(unlabelled)
    if len(candidates):
        # one issue per unlabelled object, whatever classes the model offered for it
        keep = nms(torch.as_tensor(image.boxes[candidates]), torch.as_tensor(image.scores[candidates]), MATCH_IOU)
        for d in candidates[keep.numpy()]:
            issue("missing_box", image.boxes[d], None, image.labels[d], image.scores[d], image.scores[d])
    return issues


def _best_fit_in_band(image: _Image, iou: np.ndarray, same: np.ndarray, g: int) -> int | None:
    """The detection of box g's class that overlaps g most, if that overlap is in NEAR_IOU..MATCH_IOU
    and g is the labelled box of that class the detection overlaps most (not a neighbour's detection)."""
    candidates = np.flatnonzero(same[g] & (iou[g] >= NEAR_IOU) & (iou[g] < MATCH_IOU))
    if not len(candidates):
        return None
    d = int(candidates[np.argmax(iou[g, candidates])])
    if iou[g, d] < np.where(same[:, d], iou[:, d], 0.0).max():
        return None
    return d


def image_ranks(issues: list[LabelIssue]) -> list[dict[str, Any]]:
    """Per image with issues: {"image", "index", "rank", "issues", "kinds"}, highest rank first."""
    by_image: dict[int, list[LabelIssue]] = {}
    for item in issues:
        by_image.setdefault(item.index, []).append(item)
    rows = []
    for index, items in by_image.items():
        rank = 1 - float(np.prod([1 - item.rank for item in items]))
        kinds = {kind: n for kind in KINDS if (n := sum(item.kind == kind for item in items))}
        rows.append({"image": items[0].image, "index": index, "rank": round(rank, 4), "issues": len(items),
                     "kinds": kinds})
    return sorted(rows, key=lambda row: (-row["rank"], row["index"]))


CSV_COLUMNS = ("place", "kind", "rank", "image", "x1", "y1", "x2", "y2", "box_index", "label", "score",
               "suggested_label", "suggested_box")


def issues_csv(issues: list[LabelIssue]) -> str:
    """One row per issue, in rank order (place 1 is the likeliest error)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for place, item in enumerate(issues, start=1):
        box = item.suggestion.get("box")
        writer.writerow([place, item.kind, item.rank, item.image, *item.box,
                         "" if item.box_index is None else item.box_index, item.label, item.score,
                         item.suggestion.get("label", ""), "" if box is None else " ".join(map(str, box))])
    return buffer.getvalue()


def write_label_issues(out_dir: Path, issues: list[LabelIssue], source: str) -> tuple[Path, Path]:
    """label_issues.json (issues, images, counts per kind) and label_issues.csv in ``out_dir``, each
    written whole or not at all. source: what was checked, for the reader (weights and data)."""
    from ..files import write_json, write_text

    counts = {kind: sum(item.kind == kind for item in issues) for kind in KINDS}
    json_path, csv_path = out_dir / "label_issues.json", out_dir / "label_issues.csv"
    write_json(json_path, {"source": source, "counts": counts, "min_rank": MIN_RANK,
                           "issues": [asdict(item) for item in issues], "images": image_ranks(issues)})
    write_text(csv_path, issues_csv(issues))
    return json_path, csv_path


COLOURS = {"missing_box": (213, 94, 0), "wrong_label": (204, 121, 167), "badly_located": (240, 160, 0),
           "spurious_box": (0, 114, 178), "model": (0, 158, 115)}
CROP = 240               # side of a gallery picture, pixels


def gallery_html(issues: list[LabelIssue], count: int = GALLERY) -> str:
    """The section of report.html: the ``count`` likeliest errors, each cropped around its box with the
    labelled box (or the unlabelled detection) in the kind's colour and what the model saw in green.
    Every name and label from the data is escaped: it is text, never markup."""
    import html

    shown = issues[:count]
    key = "".join(f'<span style="background: rgb{colour}">{kind.replace("_", " ")}</span>'
                  for kind, colour in COLOURS.items())
    figures = []
    for place, item in enumerate(shown, start=1):
        path = Path(item.image)
        said = item.suggestion.get("label")
        caption = (f"#{place} {item.kind.replace('_', ' ')} (rank {item.rank:.2f}): "
                   f"<a href=\"{html.escape(path.resolve().as_uri())}\">{html.escape(path.name)}</a>, "
                   f"{'detected' if item.kind == 'missing_box' else 'labelled'} {html.escape(item.label)} "
                   f"[{', '.join(f'{v:.0f}' for v in item.box)}]"
                   + (f", box {item.box_index}" if item.box_index is not None else "")
                   + (f"; the model says {html.escape(str(said))} ({item.score:.2f})" if said else
                      f"; model score {item.score:.2f}"))
        figures.append(f'<figure><img alt="{html.escape(path.name)}" src="{_drawn(item)}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    body = f'<div class="gallery">{"".join(figures)}</div>' if figures else "<p>no likely label errors found</p>"
    return (f"<h2>Likely label errors ({len(shown)} of {len(issues)}, likeliest first)</h2>"
            f'<p class="key">{key}</p>{body}')


def _drawn(item: LabelIssue) -> str:
    """The picture around the issue's box, as a JPEG data URI."""
    import base64

    from PIL import Image, ImageDraw

    from ..data.images import read_rgb

    picture = Image.fromarray(read_rgb(item.image))
    boxes = [item.box] + ([item.suggestion["box"]] if "box" in item.suggestion else [])
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = max(x1 - x0, y1 - y0, 32)             # as much context around the box as the box itself
    window = (max(0, int(x0 - margin)), max(0, int(y0 - margin)),
              min(picture.width, int(x1 + margin) + 1), min(picture.height, int(y1 + margin) + 1))
    crop = picture.crop(window)
    scale = CROP / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
    draw = ImageDraw.Draw(crop)

    def outline(box, colour, width):
        draw.rectangle([(box[0] - window[0]) * scale, (box[1] - window[1]) * scale,
                        (box[2] - window[0]) * scale, (box[3] - window[1]) * scale], outline=colour, width=width)

    if "box" in item.suggestion:
        outline(item.suggestion["box"], COLOURS["model"], 2)
    outline(item.box, COLOURS[item.kind], 3)
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_label_report(path: Path, issues: list[LabelIssue], title: str) -> Path:
    """report.html of ``rcnn data check --weights``: the gallery alone, one self-contained page."""
    import html

    from ..files import write_text
    from .html_report import CHECK_IMAGES, STYLE

    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{gallery_html(issues)}"
            f"<script>{CHECK_IMAGES}</script></body></html>")
    write_text(path, page)
    return path
