"""Video (issue 19): `rcnn predict clip.mp4 --save-video --every N` writes an annotated video at the
source's frame rate divided by N, and every per-frame output names its frame."""

from __future__ import annotations

import json

import cv2
import numpy as np
from helpers import bccd_images

from rcnn_cli.commands import predict


def make_clip(path, frames: int = 6, fps: float = 6.0) -> None:
    """A short real-image clip: BCCD pictures, downscaled to 160x120, one per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for image in bccd_images(frames):
        writer.write(cv2.resize(cv2.imread(str(image)), (160, 120)))
    writer.release()


def test_save_video_writes_the_annotated_clip_at_real_speed(tiny_run, tmp_path):
    clip = tmp_path / "cells.mp4"
    make_clip(clip)
    out = tmp_path / "p"
    code = predict.run(predict.PredictOptions([str(clip)], tiny_run / "checkpoints" / "best.ckpt",
                                              ["device=cpu"], out=out, conf="0.05", every=2, save_video=True,
                                              formats=["json,voc"]))
    assert code == 0
    annotated = cv2.VideoCapture(str(out / "cells_annotated.mp4"))
    count, fps = int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)), annotated.get(cv2.CAP_PROP_FPS)
    ok, frame = annotated.read()
    annotated.release()
    assert ok and frame.shape == (120, 160, 3) and count == 3 and abs(fps - 3.0) < 0.01
    results = json.loads((out / "predictions.json").read_text())
    assert [r["output_name"] for r in results] == ["cells_f000000", "cells_f000002", "cells_f000004"]
    assert sorted(p.name for p in (out / "voc").iterdir()) == [f"cells_f00000{i}.xml" for i in (0, 2, 4)]
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"cells_f00000{i}.jpg" for i in (0, 2, 4)]
    assert [p.name for p in out.glob(".*")] == [".rcnn-predictions"]   # no temp file left, only the output marker
    assert np.asarray(frame).std() > 0
