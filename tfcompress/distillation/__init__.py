"""Teacher-student distillation inside `model.fit`, composable with pruning and QAT.

distil:  `Distiller(teacher, student, distillation_losses, ...)`, then
         `compile(optimizer, loss=<label loss>, metrics=...)` and `fit(...)`
         with any callbacks (`tfcompress.pruning.UpdatePruningStep()` included);
use:     `distiller.student` is the trained plain Keras model.

Losses: `LogitsDistillation` (Hinton, classification), `BinaryDistillation`
(click-through), `FeatureDistillation` (hints, with a learned projection),
`ListwiseDistillation` / `PairwiseDistillation` (ranking); the
`keras.distillation` losses are accepted too. `tfcompress.recipe.distill_and_prune`
runs the whole recipe (distil + prune in one fit, then strip).
"""

from tfcompress import core
from tfcompress.distillation import stage
from tfcompress.distillation import callbacks
from tfcompress.distillation.base import DistillationLoss
from tfcompress.distillation.binary import BinaryDistillation
from tfcompress.distillation.distiller import Distiller
from tfcompress.distillation.feature import FeatureDistillation
from tfcompress.distillation.logits import LogitsDistillation
from tfcompress.distillation.ranking import ListwiseDistillation, PairwiseDistillation

__all__ = [
    "BinaryDistillation", "DistillationLoss", "callbacks", "Distiller", "FeatureDistillation",
    "ListwiseDistillation", "LogitsDistillation", "PairwiseDistillation",
]

core.register(core.Technique("distillation", section=callbacks.distillation_section, stage=stage.STAGE))
