"""How each NNCF option choice for the OpenVINO int8 IR agrees with fp32 torch (docs/speed.md "Int8 OpenVINO choices").

Usage: python measurements/openvino_int8_choices.py CHECKPOINT FP32_XML [NAME-SUBSTRING...]
(FP32_XML from `rcnn export --weights CHECKPOINT --format openvino`; run where the checkpoint's data is.)
"""

import re
import sys
import time
from pathlib import Path

import nncf
import openvino as ov
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
from nncf.quantization.range_estimator import RangeEstimatorParametersSet

from rcnn_cli.data.samples import calibration_images
from rcnn_cli.export.verify import check_images, verify_export
from rcnn_cli.inference.exported import load_exported
from rcnn_cli.inference.predictor import load_predictor
from rcnn_cli.settings.resolve import resolve

weights, xml = sys.argv[1], Path(sys.argv[2])
s = resolve("export", ["device=cpu"], weights=weights)
det = load_predictor(s.cfg, s.checkpoint, prepare=False)
checked = check_images(None, det.metadata.get("dataset"))
found = calibration_images(None, det.metadata.get("dataset"))
calib, origin = found.images, found.origin
print("calib", len(calib), origin, "check", len(checked))
model = ov.Core().read_model(str(xml))
data = nncf.Dataset(calib, lambda im: {"image": im.contiguous().numpy()})
not_backbone = r"^(?!/backbone/).*"
rpn_tail = r"^/head/(cls_logits|bbox_pred).*"
choices = {
    "all defaults": {},
    "backbone+fpn only": dict(ignored_scope=nncf.IgnoredScope(patterns=[not_backbone], validate=False)),
    "backbone+fpn, overflow fix all": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[not_backbone], validate=False),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    ),
    "backbone+fpn+rpn conv": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[r"^(?!/backbone/|/head/conv/).*"], validate=False)
    ),
    "convs+fc6/fc7, not rpn/box outputs": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[r"^(?!/backbone/|/head/conv/|/box_head/).*"], validate=False)
    ),
    "backbone+fpn performance preset": dict(
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=nncf.IgnoredScope(patterns=[not_backbone], validate=False),
    ),
    "backbone+fpn, overflow fix, minmax": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[not_backbone], validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    ),
    "all, overflow fix, minmax": dict(
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        )
    ),
    "backbone+fpn+rpn conv, overflow fix, minmax": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[r"^(?!/backbone/|/head/conv/).*"], validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE, activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    ),
    "backbone+fpn, minmax, no overflow fix": dict(
        ignored_scope=nncf.IgnoredScope(patterns=[not_backbone], validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    ),
    "all, overflow fix": dict(advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)),
}
only = sys.argv[3:]
for name, kw in choices.items():
    if only and not any(o in name for o in only):
        continue
    t = time.time()
    q = nncf.quantize(model, data, subset_size=len(calib), **kw)
    out = xml.with_name(f"q_{re.sub('[^a-z0-9]+', '_', name)}.xml")
    ov.save_model(q, str(out), compress_to_fp16=False)
    qt = time.time() - t
    fq = sum(op.get_type_name() == "FakeQuantize" for op in q.get_ops())
    r = verify_export(det.model, load_exported(out, precision="fp32"), checked)
    a = r.agreement
    size = (out.stat().st_size + out.with_suffix(".bin").stat().st_size) / 1e6
    print(
        f"{name}: FQ {fq}, agreement {a.map50}, matched {a.matched}/{a.compared}, {size:.1f} MB, "
        f"ov int8 {r.exported_ms:.0f} ms vs torch {r.torch_ms:.0f}; quantize {qt:.0f}s",
        flush=True,
    )
