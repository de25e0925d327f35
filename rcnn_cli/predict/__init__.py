"""``rcnn predict``: sources -> batched detection -> pictures and JSON/CSV/COCO/VOC files."""
