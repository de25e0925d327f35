"""Fast inference paths around the paper's model: BatchNorm folding and channels_last (``fast``),
bf16 where the hardware runs it faster (``hardware`` decides), int8 (``quantize``), and the
runners of exported ``.onnx`` / ``.torchscript`` files (``exported``)."""
