"""json vs orjson on a COCO-shaped file of 118,287 images and 863,261 boxes: parse time and peak RSS,
each parser in a fresh process (docs/speed.md, "Data at scale"). Usage: python measurements/json_parsers.py"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import resource, sys, time, {lib}
start = time.perf_counter()
data = {lib}.loads(open(sys.argv[1], "rb").read())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"{lib}: {{time.perf_counter() - start:.2f}} s, peak RSS {{peak}} MB")
"""


def coco_shaped(path: Path, images: int = 118_287, boxes: int = 863_261) -> None:
    rng = random.Random(0)
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(images)],
            "annotations": [{"id": k, "image_id": rng.randrange(images), "category_id": rng.randrange(80),
                             "bbox": [rng.random() * 600, rng.random() * 400, 30.5, 20.25], "iscrowd": 0,
                             "area": 610.1} for k in range(boxes)],
            "categories": [{"id": i, "name": str(i)} for i in range(80)]}
    path.write_text(json.dumps(data))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "coco.json"
        coco_shaped(path)
        print(f"{path.stat().st_size / 1e6:.0f} MB of JSON")
        for lib in ("json", "orjson"):
            subprocess.run([sys.executable, "-c", MEASURE.format(lib=lib), str(path)], check=True)
