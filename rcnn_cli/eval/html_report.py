"""``report.html``: the evaluation as one self-contained page (works offline, no CDN): the metric
table, per-class AP, the PR curves and confusion matrix, and per class a gallery of the images the
model gets most wrong at its operating point (the per-class best-F1 threshold of thresholds.json).

Errors of one class on one image, at that threshold, matching by IoU 0.5 as VOC does:
    false positive   a detection that matches no ground-truth box of its class (its score shown)
    missed           a ground-truth box that no detection matched
    mislocalised     a false positive that overlaps a box of its class at IoU 0.1-0.5 (right
                     object, wrong box), counted apart from background false positives
Ignored boxes (VOC difficult, COCO crowd) count nowhere.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .matching import MATCH_IOU, NEAR_IOU, as_numpy, pairwise_iou

GALLERY_SIZE = 4            # worst images shown per class
THUMBNAIL = 360             # longest side of a gallery picture, pixels
COLOURS = {"hit": (0, 158, 115), "false positive": (213, 94, 0), "mislocalised": (240, 160, 0),
           "missed": (0, 114, 178)}


@dataclass
class ImageErrors:
    index: int                                   # position in the evaluated list
    false_positives: list[tuple[np.ndarray, float]] = field(default_factory=list)
    mislocalised: list[tuple[np.ndarray, float]] = field(default_factory=list)
    missed: list[np.ndarray] = field(default_factory=list)
    hits: list[tuple[np.ndarray, float]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.false_positives) + len(self.mislocalised) + len(self.missed)


def class_errors(prediction: dict, target: dict, label: int, threshold: float, index: int) -> ImageErrors:
    """The errors of class ``label`` on one image, greedy matching by score as VOC does."""
    errors = ImageErrors(index)
    scores = as_numpy(prediction["scores"]).astype(float)
    keep = (as_numpy(prediction["labels"]) == label) & (scores >= threshold)
    boxes, scores = as_numpy(prediction["boxes"]).reshape(-1, 4)[keep], scores[keep]
    ignore = as_numpy(target.get("ignore", np.zeros(len(as_numpy(target["labels"])), bool))).astype(bool)
    is_class = as_numpy(target["labels"]) == label
    truth = as_numpy(target["boxes"]).reshape(-1, 4)[is_class & ~ignore]
    ignored = as_numpy(target["boxes"]).reshape(-1, 4)[is_class & ignore]
    iou = pairwise_iou(boxes, truth) if len(truth) else np.zeros((len(boxes), 0))
    iou_ignored = pairwise_iou(boxes, ignored) if len(ignored) else np.zeros((len(boxes), 0))
    taken = np.zeros(len(truth), bool)
    for i in np.argsort(-scores, kind="stable"):
        best = int(iou[i].argmax()) if iou.shape[1] else -1
        if best >= 0 and iou[i, best] >= MATCH_IOU and not taken[best]:
            taken[best] = True
            errors.hits.append((boxes[i], float(scores[i])))
        elif iou_ignored.shape[1] and iou_ignored[i].max() >= MATCH_IOU:
            continue
        elif best >= 0 and iou[i].max() >= NEAR_IOU:
            errors.mislocalised.append((boxes[i], float(scores[i])))
        else:
            errors.false_positives.append((boxes[i], float(scores[i])))
    errors.missed = [box for box, hit in zip(truth, taken) if not hit]
    return errors


def worst_images(predictions: list[dict], targets: list[dict], label: int, threshold: float,
                 count: int = GALLERY_SIZE) -> list[ImageErrors]:
    every = [class_errors(p, t, label, threshold, i) for i, (p, t) in enumerate(zip(predictions, targets))]
    return sorted((e for e in every if e.count), key=lambda e: -e.count)[:count]


def drawn_errors(path: Path, errors: ImageErrors) -> str:
    """The picture with the class's hits, false positives, mislocalised and missed boxes, as a
    JPEG data URI (small: the page must stay light)."""
    from PIL import Image, ImageDraw

    from ..data.images import read_rgb

    picture = Image.fromarray(read_rgb(path))
    scale = min(2.0, THUMBNAIL / max(picture.size))     # small pictures are enlarged to be readable
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    draw = ImageDraw.Draw(picture)
    kinds = [("hit", errors.hits), ("false positive", errors.false_positives),
             ("mislocalised", errors.mislocalised), ("missed", [(box, None) for box in errors.missed])]
    for kind, items in kinds:
        for box, score in items:
            xyxy = [float(v) * scale for v in box]
            draw.rectangle(xyxy, outline=COLOURS[kind], width=2)
            if score is not None and kind != "hit":
                draw.text((xyxy[0] + 2, xyxy[1] + 1), f"{score:.2f}", fill=COLOURS[kind])
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { max-width: 420px; margin: 4px; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { margin: 0; } .gallery img { border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; max-width: 360px; } .key span { padding: 0 6px; margin-right: 6px; color: white; }
"""
# After load, the page records how many of its pictures decoded: what the browser test reads.
CHECK_IMAGES = """
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length; document.body.dataset.loaded = loaded;
});
"""


def write_html_report(path: Path, report, image_paths: list[Path], plots: list[Path],
                      thresholds: dict[str, float], title: str, sections: tuple[str, ...] = ()) -> Path:
    """report: eval.report.EvalReport; image_paths[i]: the file of report.predictions[i]; sections: more
    HTML at the end of the page (label_issues.gallery_html)."""
    from ..files import write_text

    summary = report.summary()
    parts = [f"<h1>{html.escape(title)}</h1>", _metric_table(summary, len(image_paths)),
             _class_table(summary, thresholds), '<h2>Curves</h2><div class="plots">']
    parts += [f'<img alt="{html.escape(p.stem)}" src="{png_data_uri(p)}">' for p in plots if p.is_file()]
    parts.append("</div><h2>Worst images per class</h2>" + _key())
    for label, name in enumerate(report.class_names, start=1):
        threshold = thresholds.get(name, 0.5)
        worst = worst_images(report.predictions, report.targets, label, threshold)
        parts.append(f"<h3>{html.escape(name)} <small>(score &ge; {threshold:.3f})</small></h3>")
        parts.append(_gallery(worst, image_paths) if worst else "<p>no errors at this threshold</p>")
    parts += sections
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{CHECK_IMAGES}</script></body></html>")
    write_text(path, page)
    return path


def _metric_table(summary: dict[str, Any], images: int) -> str:
    rows = "".join(f"<tr><td>{html.escape(key)}</td><td class=\"n\">{_number(value)}</td></tr>"
                   for key, value in summary.items() if key != "per_class")
    return f"<h2>Metrics ({images} images)</h2><table>{rows}</table>"


def _class_table(summary: dict[str, Any], thresholds: dict[str, float]) -> str:
    head = "<tr><th>class</th><th>boxes</th><th>AP</th><th>AP50</th><th>VOC07 AP50</th><th>best-F1 score</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=\"n\">{row['ground_truth']}</td><td class=\"n\">"
        f"{_number(row['ap'])}</td><td class=\"n\">{_number(row['ap50'])}</td><td class=\"n\">"
        f"{_number(row['voc07_ap50'])}</td><td class=\"n\">{thresholds.get(name, 0):.3f}</td></tr>"
        for name, row in summary["per_class"].items())
    return f"<h2>Per class</h2><table>{head}{rows}</table>"


def _gallery(worst: list[ImageErrors], image_paths: list[Path]) -> str:
    figures = []
    for errors in worst:
        path = Path(image_paths[errors.index])
        fps = ", ".join(f"{score:.2f}" for _, score in errors.false_positives)
        caption = (f"<a href=\"{html.escape(path.resolve().as_uri())}\">{html.escape(path.name)}</a>: "
                   f"{len(errors.false_positives)} false positive(s){f' ({fps})' if fps else ''}, "
                   f"{len(errors.mislocalised)} mislocalised, {len(errors.missed)} missed")
        figures.append(f'<figure><img alt="{html.escape(path.name)}" src="{drawn_errors(path, errors)}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _key() -> str:
    spans = "".join(f'<span style="background: rgb{colour}">{kind}</span>' for kind, colour in COLOURS.items())
    return f'<p class="key">{spans}</p>'


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        return "n/a" if value < 0 else f"{value:.4f}"
    return html.escape(str(value))
