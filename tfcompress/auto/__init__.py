"""Compress to a budget: `compress(model, data, budget={"tflite_bytes": ...})`."""

from tfcompress.auto.compress import AutoResult, compress

__all__ = ["AutoResult", "compress"]
