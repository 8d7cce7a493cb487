"""Low-rank factorization: each Dense, EinsumDense and Embedding split in two by truncated SVD.

prepare: `factorize(model, energy=0.9)` (or `rank=`, `ratio=`) → a plain
         Keras model where a layer with an m×n kernel is two thinner layers
         (`<name>_lowrank`, then `<name>`) holding `r·(m + n)` values;
fit:     `model.fit(...)` to recover the accuracy (no callbacks needed;
         distilling from the original model with `tfcompress.distillation`
         helps);
export:  nothing to strip: prune, quantize or `tfcompress.export.to_tflite`
         the result like any model (TFLite runs two FULLY_CONNECTED ops).
"""

from tfcompress import core
from tfcompress.factorization import stage, svd
from tfcompress.factorization.api import SUFFIX, factorize, factorized_layers

__all__ = ["SUFFIX", "factorize", "factorized_layers", "stage", "svd"]


def _columns(model):
    """How many layers were factorized, for factorized models only."""
    found = factorized_layers(model)
    return {"factorized layers": len(found)} if found else {}


core.register(core.Technique("factorization", stage=stage.STAGE, columns=_columns))
