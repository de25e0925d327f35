"""rcnn-cli: train, evaluate, run and export Faster R-CNN detectors."""

from .version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `rcnn --help` does not pay for importing torch.
    if name == "Detector":
        from .api import Detector

        return Detector
    raise AttributeError(name)
