"""Export a trained detector to ONNX or TorchScript, and run exported files."""
