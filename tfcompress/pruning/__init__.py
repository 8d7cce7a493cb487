"""Magnitude pruning with schedules, inside `model.fit`.

prepare: `prune_low_magnitude(model, pruning_schedule=...)`
fit:     `model.fit(..., callbacks=[UpdatePruningStep(), PruningSummaries(dir)])`
strip:   `strip_pruning(model)` → plain Keras model with the zeros baked in.
"""

from tfcompress import core
from tfcompress.pruning import stage
from tfcompress.pruning import allocation, callbacks, masks, registry
from tfcompress.pruning.api import prune_low_magnitude, prune_scope, strip_pruning
from tfcompress.pruning.callbacks import PruningSummaries, UpdatePruningStep, sparsity_logs
from tfcompress.pruning.policy import PruneForLatencyOnXNNPack, PruningPolicy
from tfcompress.pruning.registry import PrunableLayer
from tfcompress.pruning.schedule import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfcompress.pruning.wrapper import PruneLowMagnitude
from tfcompress.pruning.filters import PruneFilters
from tfcompress.pruning.structured import channel_report, prune_filters
from tfcompress.core.shrink import shrink
from tfcompress.pruning import filters_stage

__all__ = [
    "ConstantSparsity", "PolynomialDecay", "PrunableLayer", "PruneForLatencyOnXNNPack",
    "PruneFilters", "PruneLowMagnitude", "PruningPolicy", "PruningSchedule", "PruningSummaries",
    "UpdatePruningStep", "allocation", "masks",
    "channel_report", "prune_filters", "prune_low_magnitude", "prune_scope", "registry",
    "shrink", "sparsity_logs",
    "strip_pruning",
]

core.register(core.Technique("pruning", section=callbacks.pruning_section, stage=stage.STAGE))
core.register(core.Technique("structured_pruning", section=callbacks.channels_section,
                             stage=filters_stage.STAGE))
