"""Everything that runs a model for inference: the predictor built from resolved settings
(``predictor``), the one precision rule (``precision``), the fast torch paths (``fast``: folded,
bf16; ``quantize``: int8), tiled inference for huge pictures (``tiling``) and the runners of
exported ``.onnx`` / ``.torchscript`` / OpenVINO files (``exported``). Writing exported files lives
in ``rcnn_cli.export``, which uses this package, never the reverse."""
