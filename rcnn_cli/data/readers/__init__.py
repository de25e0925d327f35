"""Dataset readers: VOC XML, COCO JSON, YOLO txt and the built-in shapes set, each producing image
records (``records.py``) after the same box checks (``sanitize.py``); ``load.py`` picks the reader."""
