"""Decoding images the same way everywhere: RGB, EXIF orientation applied.

Labelling tools (CVAT, Roboflow) show photos upright, i.e. with EXIF orientation applied, and users
draw boxes on what they see; so we apply it too, in training, evaluation and prediction. LabelImg
and a few others label the stored pixels instead: such files are recognised by their declared size
(the stored one) at the image's first read (``DetectionDataset``), or at load where the header is
read anyway, and their boxes turned (``upright_boxes``), so that pixels are decoded one way.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ORIENTATION = 0x0112        # the EXIF tag
SWAPS_SIDES = (5, 6, 7, 8)  # orientations shown turned by 90 degrees: width and height trade places


class ImageReadError(ValueError):
    """An image that cannot be used; the message is one line naming the file."""


class ImageTooLarge(ImageReadError):
    """An image over the pixel limit, refused from its header (a service answers 413, not 400)."""


@cache
def default_max_pixels() -> int:
    """``dataset.max_image_pixels`` as conf/dataset/_base.yaml sets it (the one place the number is
    written), for images read without a dataset config, such as prediction's."""
    base = Path(__file__).resolve().parents[1] / "conf" / "dataset" / "_base.yaml"
    return int(yaml.safe_load(base.read_text())["max_image_pixels"])


# Pillow's own (looser) guard stays on for code that calls Image.open itself; open_image's is exact.
Image.MAX_IMAGE_PIXELS = default_max_pixels()


@contextmanager
def open_image(path: Path | io.BytesIO, max_pixels: int | None = None, label: str | None = None,
               limit_name: str = "dataset.max_image_pixels") -> Iterator[Image.Image]:
    """``Image.open`` that refuses images of more than ``max_pixels`` (default: ``default_max_pixels``)
    from the header, before decoding: decompression bombs get a message, not all the memory.
    ``limit_name``: the setting that raises the limit, named in the message.

    Pillow only warns between its limit and twice that, so the check is done here, exactly.
    """
    limit = int(max_pixels or default_max_pixels())
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit      # a larger configured limit: Pillow must not refuse first
    advice = f"over {limit_name}={limit:,}; refusing to decode it (raise the limit if it is genuine)"
    label = label or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{label}: {advice}") from None
    with opened:
        width, height = opened.size
        if width * height > limit:
            raise ImageTooLarge(f"{label}: {width}x{height} is {width * height:,} pixels, {advice}")
        yield opened


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image in any mode (L, LA, P, RGBA, CMYK, I;16, I, F) -> (H, W, 3) uint8 RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: scale the used range to 0..255 instead of clipping to white.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / max(high - low, 1e-6))
        values = scaled.round().astype(np.uint8)
        return np.repeat(values[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy needs one


def read_rgb(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, EXIF orientation applied.

    Raises ImageReadError (one line, names the file) for missing, truncated, non-image or
    oversized (more than ``max_pixels``, see ``open_image``) files.
    """
    return _decode(Path(path), str(path), max_pixels)


def decode_bytes(data: bytes, label: str, max_pixels: int | None = None,
                 limit_name: str = "dataset.max_image_pixels") -> np.ndarray:
    """``read_rgb`` for an image already in memory (an upload); ``label`` names it in errors,
    ``limit_name`` the setting that raises ``max_pixels``."""
    return _decode(io.BytesIO(data), label, max_pixels, limit_name)


def pixels_of_bytes(data: bytes, label: str, max_pixels: int | None = None,
                    limit_name: str = "dataset.max_image_pixels") -> int:
    """Width x height of an image in memory from its header alone, refused as ``decode_bytes`` would
    refuse it: a service learns what a request will cost before paying for it."""
    with _one_line_errors(label), open_image(io.BytesIO(data), max_pixels, label, limit_name) as opened:
        width, height = opened.size
    return width * height


def _decode(source: Path | io.BytesIO, label: str, max_pixels: int | None,
            limit_name: str = "dataset.max_image_pixels") -> np.ndarray:
    with _one_line_errors(label), open_image(source, max_pixels, label, limit_name) as opened:
        opened.load()
        return to_rgb_array(opened)


@contextmanager
def _one_line_errors(label: str) -> Iterator[None]:
    """PIL's and the file system's errors -> ImageReadError, one line naming the image."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{label}: file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not an image (or a format PIL cannot read)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{label}: unreadable or truncated image ({err})") from None


def read_chw(path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8 RGB tensor of an image file, as ``read_rgb`` decodes it."""
    return torch.from_numpy(read_rgb(path, max_pixels)).permute(2, 0, 1)


def read_decodable_chw(paths) -> list[torch.Tensor]:
    """``read_chw`` of each path that decodes; the others are skipped (for side uses such as
    calibration or check images, where the main run reports unreadable files)."""
    images = []
    for path in paths:
        try:
            images.append(read_chw(path))
        except ImageReadError:
            continue
    return images


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) as decoded (EXIF rotation applied), reading only the header."""
    width, height, orientation = image_header(path, max_pixels)
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def image_header(path: str | Path, max_pixels: int | None = None) -> tuple[int, int, int]:
    """(stored width, stored height, EXIF orientation 1..8) from the header, before any rotation;
    ImageReadError for images over ``max_pixels`` as for unreadable ones."""
    path = Path(path)
    try:
        with open_image(path, max_pixels) as opened:
            width, height = opened.size
            orientation = opened.getexif().get(ORIENTATION, 1)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: unreadable image header ({err})") from None
    return width, height, orientation if orientation in range(1, 9) else 1


def upright_boxes(boxes: np.ndarray, orientation: int, width: int, height: int) -> np.ndarray:
    """(N, 4) xyxy boxes on the stored ``width`` x ``height`` pixels -> the same regions on the
    picture ``read_rgb`` decodes, i.e. turned as ``ImageOps.exif_transpose`` turns the pixels."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    corners = {   # where the stored corners (x1, y1) and (x2, y2) land, per orientation
        1: (x1, y1, x2, y2), 2: (width - x1, y1, width - x2, y2), 3: (width - x1, height - y1, width - x2, height - y2),
        4: (x1, height - y1, x2, height - y2), 5: (y1, x1, y2, x2), 6: (height - y1, x1, height - y2, x2),
        7: (height - y1, width - x1, height - y2, width - x2), 8: (y1, width - x1, y2, width - x2),
    }[orientation]
    ax, ay, bx, by = corners
    return np.stack([np.minimum(ax, bx), np.minimum(ay, by), np.maximum(ax, bx), np.maximum(ay, by)], axis=1)
