"""Reading weight files safely and fitting them to a model.

Accepted: torchvision detection state_dicts (``fasterrcnn_*``), this project's checkpoints
(Lightning ``.ckpt`` with ``state_dict`` under ``model.``), and ImageNet classification
state_dicts for the backbone. Nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import RcnnError

# Metadata key this project stores in its checkpoints (class names, model and data config).
META_KEY = "rcnn_cli"
PREDICTOR_PREFIX = "roi_heads.box_predictor."


class WeightsError(RcnnError, ValueError):
    """A weights file that cannot be used; the message is one line for the user."""


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """torch.load with ``weights_only=True`` and one-line errors for every way it can fail."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise WeightsError(f"{path} is an ONNX model, not a checkpoint; pass a .pt/.pth/.ckpt file "
                           "(ONNX files run with `rcnn predict --weights model.onnx`)")
    if what := foreign_model(path):
        raise WeightsError(f"{path} {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise WeightsError(f"refused to load {path}: it holds Python objects that could run code "
                               "when loaded; only tensors and plain containers are accepted") from None
        raise WeightsError(f"{path} is not a PyTorch checkpoint ({first})") from None
    except Exception as err:  # torch.load raises many types for foreign bytes (KeyError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or another "
                           f"format: {reason[:120]})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint")
    return dict(obj)


# Protobuf tags that can follow ONNX's ModelProto field 1 (ir_version): fields 2-8 and 10-14, as bytes.
_ONNX_NEXT_TAGS = {0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a, 0x42, 0x52, 0x5a, 0x62, 0x6a, 0x72}


def foreign_model(path: Path) -> str | None:
    """What a file that is not a PyTorch checkpoint really is, with what to do, from its first bytes; None
    for anything else. Without it torch.load's refusal of foreign bytes reads as a security warning
    ("Python objects that could run code") when the file is just another model format."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(512)
    rename = f"rename it to {path.stem}{{}} and run it with `rcnn predict --weights {path.stem}{{}}`"
    # ModelProto starts with ir_version (tag 0x08, a small varint) then another field: what onnx.save writes.
    if len(head) > 2 and head[0] == 0x08 and 3 <= head[1] <= 40 and head[2] in _ONNX_NEXT_TAGS:
        return "is an ONNX model, not a checkpoint; " + rename.format(".onnx", ".onnx")
    if head.lstrip().startswith((b"<?xml", b"<net")) and b"<net" in head:
        return ("is an OpenVINO model (XML), not a checkpoint; " + rename.format(".xml", ".xml")
                + f" (its weights are the {path.stem}.bin beside it)")
    if len(head) > 9 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return ("is a safetensors file, not a PyTorch checkpoint; convert it with safetensors.torch.load_file "
                "and torch.save to a .pt file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):   # torch.jit.save's layout
            return "is a TorchScript model, not a checkpoint; " + rename.format(".torchscript", ".torchscript")
    return None


def split_checkpoint(obj: Mapping[str, Any], path: str | Path = "weights") -> tuple[dict[str, Tensor], dict]:
    """(state_dict with model-relative keys, project metadata or {})."""
    meta = dict(obj.get(META_KEY) or {})
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], Mapping):  # torchvision reference scripts
        state = obj["model"]
    else:
        state = obj
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightsError(f"{path} contains no model weights")
    return _normalise_keys(tensors), meta


def _normalise_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrappers' prefixes (Lightning ``model.``, DDP ``module.``, EMA ``ema_model.``) and
    rename torchvision's pre-0.13 RPN head keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("model.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("ema_model."):
            continue
        for kind in ("weight", "bias"):
            if key == f"rpn.head.conv.{kind}":
                key = f"rpn.head.conv.0.0.{kind}"
        out[key] = value
    return out


def guess_model_name(state: Mapping[str, Tensor]) -> str | None:
    """Which preset a detection state_dict was saved from, judged by its keys."""
    if "roi_heads.box_head.0.0.weight" in state:
        return "resnet50_fpn_v2"
    if "backbone.body.layer1.0.conv3.weight" in state:
        return "resnet50_fpn"
    if "backbone.body.layer1.0.conv1.weight" in state:
        return "resnet18_fpn"
    if "backbone.body.0.0.weight" in state:
        return "mobilenet_v3_large_fpn"
    if "backbone.body.28.weight" in state:
        return "vgg16"
    return None


def num_classes_in(state: Mapping[str, Tensor]) -> int | None:
    weight = state.get(PREDICTOR_PREFIX + "cls_score.weight")
    return int(weight.shape[0]) if weight is not None else None


def uses_trainable_bn(state: Mapping[str, Tensor]) -> bool:
    """torchvision saves ``num_batches_tracked`` only for trainable BatchNorm."""
    return any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state)


def load_detector_weights(model: nn.Module, state: dict[str, Tensor], name: str, backbone: str,
                          reinit_predictor: bool = False) -> list[str]:
    """Load a detection state_dict into ``model``; returns notes for the user.

    Raises WeightsError naming the mismatched keys. With ``reinit_predictor`` a classifier
    for another number of classes is left freshly initialised (fine-tuning) instead.
    """
    target = model.state_dict()
    state = _fit_norm_buffers(state, target)
    notes, fresh = [], set()
    if reinit_predictor and _shape_mismatch(state, target, PREDICTOR_PREFIX):
        theirs, ours = num_classes_in(state), num_classes_in(target)
        state = {k: v for k, v in state.items() if not k.startswith(PREDICTOR_PREFIX)}
        fresh = {k for k in target if k.startswith(PREDICTOR_PREFIX)}
        notes.append(f"the weights have {theirs} classes (with background) and the model {ours}: "
                     "the box predictor starts from scratch")
    missing = sorted(set(target) - set(state) - fresh)
    unexpected = sorted(set(state) - set(target))
    wrong_shape = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong_shape:
        raise WeightsError(_mismatch_message(state, name, backbone, missing, unexpected, wrong_shape))
    model.load_state_dict(state, strict=not notes)
    return notes


def _fit_norm_buffers(state: dict[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """BatchNorm and FrozenBatchNorm differ only by ``num_batches_tracked``: add or drop it."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") or k in target}
    for key in target:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    return state


def _shape_mismatch(state: Mapping[str, Tensor], target: Mapping[str, Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) and k in target and v.shape != target[k].shape for k, v in state.items())


def _mismatch_message(state, name, backbone, missing, unexpected, wrong_shape) -> str:
    parts = []
    if wrong_shape:
        parts.append(f"different shapes for {_few(wrong_shape)}")
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    guess = guess_model_name(state)
    hint = f"; they look like model={guess}" if guess and guess != backbone else ""
    if wrong_shape and all(k.startswith(PREDICTOR_PREFIX) for k in wrong_shape) and not hint:
        hint = (f"; the file has {num_classes_in(state)} classes (with background): "
                "set model.num_classes to match, or fine-tune with model.weights=")
    return f"weights do not fit model {name}: " + "; ".join(parts) + hint


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def backbone_state_from_classifier(state: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """Map an ImageNet classification state_dict (torchvision names) onto detector keys.

    ResNets: ``conv1/bn1/layerN.*`` -> ``backbone.body.*``; MobileNetV3: ``features.N.*`` ->
    ``backbone.body.N.*``; VGG16: ``features.N.*`` -> ``backbone.body.N.*`` and, as in the
    paper, ``classifier.0/3`` -> the box head's fc6/fc7. Classifier-only layers are dropped.
    """
    out = {}
    for key, value in state.items():
        if name.startswith("resnet") and not key.startswith("fc."):
            out["backbone.body." + key] = value
        elif key.startswith("features."):
            out["backbone.body." + key[len("features."):]] = value
        elif name == "vgg16" and key.startswith(("classifier.0.", "classifier.3.")):
            fc = "fc6" if key.startswith("classifier.0.") else "fc7"
            out[f"roi_heads.box_head.{fc}.{key.rsplit('.', 1)[1]}"] = value
    return out


def load_backbone_weights(model: nn.Module, state: Mapping[str, Tensor], name: str, path: str | Path) -> None:
    """Load ImageNet classification weights into the backbone; one-line error on mismatch."""
    target = model.state_dict()
    mapped = _fit_norm_buffers(backbone_state_from_classifier(state, name), target)
    mapped = {k: v for k, v in mapped.items() if k.startswith("backbone.") or ".box_head." in k}
    unexpected = sorted(k for k in mapped if k not in target)
    wrong = sorted(k for k in mapped if k in target and mapped[k].shape != target[k].shape)
    body = [k for k in target if k.startswith("backbone.body.")]
    missing = sorted(k for k in body if k not in mapped)
    if unexpected or wrong or missing or not mapped:
        raise WeightsError(f"{path} does not fit the {name} backbone: "
                           + "; ".join(p for p in [
                               f"unexpected {_few(unexpected)}" if unexpected else "",
                               f"different shapes for {_few(wrong)}" if wrong else "",
                               f"missing {_few(missing)}" if missing else ""] if p))
    model.load_state_dict(mapped, strict=False)
