"""rcnn-cli: train, evaluate, run and export Faster R-CNN detectors."""

__version__ = "0.1.0"
