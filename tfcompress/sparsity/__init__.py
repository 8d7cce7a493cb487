"""TFMOT-compatible namespace: `tfcompress.sparsity.keras` mirrors `tfmot.sparsity.keras`."""

from tfcompress.sparsity import keras

__all__ = ["keras"]
