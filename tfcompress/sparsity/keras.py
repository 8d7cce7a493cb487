"""`tfmot.sparsity.keras` names, for Keras 3. Aliases only: see `tfcompress.pruning`.

```python
import tfcompress as tfmot
prune_low_magnitude = tfmot.sparsity.keras.prune_low_magnitude
```
"""

from tfcompress.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    PrunableLayer,
    PruneForLatencyOnXNNPack,
    PruneLowMagnitude,
    PruningPolicy,
    PruningSchedule,
    PruningSummaries,
    UpdatePruningStep,
    prune_low_magnitude,
    prune_scope,
    strip_pruning,
)

__all__ = [
    "ConstantSparsity", "PolynomialDecay", "PrunableLayer", "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude", "PruningPolicy", "PruningSchedule", "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude", "prune_scope", "strip_pruning",
]
