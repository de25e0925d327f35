"""Tensor helpers shared by the model parts (no nn.Modules here)."""
