"""Images/s of an exported file with one image in flight against several (``requests=0``: the runner
chooses), on the same pictures in one process (docs/speed.md, "Several images in flight").
Usage: python measurements/in_flight.py FILE.onnx|FILE.xml 'GLOB' [COUNT]"""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

from rcnn_cli.data.images import read_decodable_chw
from rcnn_cli.inference.exported import load_exported

if __name__ == "__main__":
    path, pattern = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    images = read_decodable_chw([Path(p) for p in sorted(glob.glob(pattern))[:count]])
    for requests in (1, 0):
        runner = load_exported(path, requests=requests)
        runner.detect(images[:2])      # warm-up
        start = time.perf_counter()
        found = runner.detect(images)
        seconds = time.perf_counter() - start
        print(f"{Path(path).name}: requests={requests} ({runner.in_flight} in flight) {len(images) / seconds:.1f} "
              f"images/s, {sum(len(f['boxes']) for f in found)} detections")
