"""Recipes: the whole compression pipeline stated as one dict (or a JSON / YAML file).

A recipe has up to six sections, each optional (an empty recipe trains nothing and
just writes the model and the report):

```python
recipe = {
    "prune": {"final_sparsity": 0.8, "initial_sparsity": 0.0, "begin_step": 0,
              "end_step": None, "frequency": None, "power": 3,
              "block_size": [1, 1], "m_by_n": None, "skip_layers": [],
              "epochs": 5},
    "quantize": {"preserve_sparsity": True, "epochs": 2, "learning_rate": None},
    "distill": {"teacher": "teacher.keras", "loss": "logits", "temperature": 4.0,
                "student_loss_weight": 0.3, "epochs": 5},
    "export": {"tflite": ["int8", "float"], "saved_model": True},
    "train": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32,
              "loss": "sparse_categorical_crossentropy", "from_logits": True,
              "metrics": ["accuracy"], "verbose": 0},
    "report": {"metric": "accuracy", "max_samples": None, "latency_runs": 20},
}
```

- `prepare(model, recipe)` builds the *first* training stage for your own `fit`:
  pruning if the recipe has `"prune"` (wrapped in a `Distiller` when it also has
  `"distill"`), otherwise quantization-aware training if it has `"quantize"`,
  otherwise distillation alone.
- `run(model, recipe, data, out_dir)` runs every stage in order (distil and/or
  prune, then QAT, then export) and writes `model.keras`, `model_<mode>.tflite`,
  `saved_model/` and `report.md` into `out_dir`.
- `distill_and_prune(teacher, student, x, y, loss)` runs the distil + prune
  (+ QAT) stages in one fit, and `fit_stage` is the one training stage every
  workflow (`run`, `distill_and_prune`, `tfcompress demo`) runs.
- The sections `prune`, `quantize` and `distill` are the techniques' own
  stages (`tfcompress.core.techniques.stages()`); a technique that registers
  a stage adds its section.
- `load(path_or_dict)` reads JSON (YAML too when PyYAML is installed) and
  validates; `validate(recipe)` returns the recipe with every default filled in.

Unknown sections or keys, and bad values, raise `ValueError` naming the key
(`prune.final_sparsity`) and the allowed keys or values.
"""

from tfcompress.recipe import pipeline
from tfcompress.recipe.pipeline import distill_and_prune, fit_stage
from tfcompress.recipe.runner import run
from tfcompress.recipe.schema import OPTIMIZERS, SCHEMA, TFLITE_MODES, load, validate
from tfcompress.recipe.stages import compile_kwargs, prepare, pruning_schedule

__all__ = ["OPTIMIZERS", "SCHEMA", "TFLITE_MODES", "compile_kwargs", "distill_and_prune",
           "fit_stage", "load", "pipeline", "prepare", "pruning_schedule", "run", "validate"]
