"""Distillation as a recipe stage: the `"distill"` section, and `prepare` (a Distiller)."""

import os

import keras

from tfcompress.core import settings, techniques
from tfcompress.core.techniques import REQUIRED
from tfcompress.distillation import binary, feature, logits, ranking
from tfcompress.distillation.distiller import Distiller

#: distill.loss -> (loss class, takes a temperature, takes from_logits)
LOSSES = {"logits": (logits.LogitsDistillation, True, True),
          "binary": (binary.BinaryDistillation, True, True),
          "listwise": (ranking.ListwiseDistillation, True, False),
          "pairwise": (ranking.PairwiseDistillation, False, False)}

DEFAULTS = {"teacher": REQUIRED, "loss": "logits", "temperature": None,
            "student_loss_weight": 0.5, "epochs": 1, "features": []}

#: keys of one `distill.features` entry (hidden-state losses besides `loss`)
FEATURE_KEYS = {"teacher": REQUIRED, "student": REQUIRED, "loss": "mse", "weight": 1.0}


def _fail(key, value, allowed):
    settings.fail("distill", key, value, allowed)


def check(s):
    """Raises `ValueError` naming the bad `distill.<key>`."""
    teacher = s["teacher"]
    if not isinstance(teacher, (str, os.PathLike, keras.Model)):
        _fail("teacher", teacher, "a .keras file path or a keras.Model")
    if s["loss"] not in LOSSES:
        _fail("loss", s["loss"], f"one of {list(LOSSES)}")
    temperature = s["temperature"]
    settings.check_number("distill", "temperature", temperature, low=0, optional=True,
                          text="a number > 0, or null for the loss's own default")
    if s["loss"] == "pairwise" and temperature is not None:
        _fail("temperature", temperature,
              "null with loss 'pairwise' (a RankNet loss has no temperature)")
    value = s["student_loss_weight"]
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value <= 1):
        _fail("student_loss_weight", value, "a number in [0, 1]")
    settings.check_int("distill", "epochs", s["epochs"], minimum=1)
    features = s["features"]
    if not isinstance(features, list):
        _fail("features", features, "a list of {teacher, student, loss, weight} entries")
    for i, entry in enumerate(features):
        _check_feature(i, entry)


def _check_feature(i, entry):
    key = f"features[{i}]"
    allowed = "{teacher: layer name, student: layer name, loss: 'mse', weight: 1.0}"
    if not isinstance(entry, dict):
        _fail(key, entry, allowed)
    unknown = sorted(set(entry) - set(FEATURE_KEYS))
    missing = sorted(k for k, v in FEATURE_KEYS.items() if v is REQUIRED and k not in entry)
    if unknown or missing:
        _fail(key, entry, allowed + (f"; unknown keys {unknown}" if unknown else "")
              + (f"; missing {missing}" if missing else ""))
    for side in ("teacher", "student"):
        if not isinstance(entry[side], str) or not entry[side]:
            _fail(f"{key}.{side}", entry[side], "a layer name")
    if entry.get("loss", "mse") not in ("mse", "cosine_similarity"):
        _fail(f"{key}.loss", entry["loss"], "'mse' or 'cosine_similarity'")
    settings.check_number("distill", f"{key}.weight", entry.get("weight", 1.0), low=0,
                          text="a number > 0")


def prepare(model, recipe, steps_in_stage=None):
    """`(Distiller(teacher, model), [])` for the recipe's `"distill"` section.

    The distillation losses are `loss` on the outputs (weight 1) and one
    `FeatureDistillation` per `features` entry (`{"teacher": layer name,
    "student": layer name, "loss": "mse", "weight": 1.0}`: hidden states,
    projected when their widths differ).

    The section's `teacher` must be a loaded `keras.Model` here (the recipe
    runner loads a file path first).

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.distillation import stage
    def mlp(width):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width),
                                 keras.layers.Dense(3)])
    distiller, _ = stage.prepare(mlp(4), recipe.validate({"distill": {"teacher": mlp(16)}}))
    ```
    """
    d = recipe["distill"]
    if not isinstance(d["teacher"], keras.Model):
        raise ValueError("'distill.teacher' must be loaded before prepare: got "
                         f"{d['teacher']!r}; recipe.run and recipe.prepare load .keras files.")
    cls, takes_temperature, takes_from_logits = LOSSES[d["loss"]]
    kwargs = {}
    if takes_temperature and d["temperature"] is not None:
        kwargs["temperature"] = d["temperature"]
    if takes_from_logits:
        kwargs["from_logits"] = recipe["train"]["from_logits"]
    losses, weights = [cls(**kwargs)], [1.0]
    for entry in d["features"]:
        entry = {**FEATURE_KEYS, **entry}
        losses.append(feature.FeatureDistillation(
            entry["loss"], teacher_layer_name=entry["teacher"],
            student_layer_name=entry["student"]))
        weights.append(float(entry["weight"]))
    distiller = Distiller(d["teacher"], model, losses, distillation_loss_weights=weights,
                          student_loss_weight=d["student_loss_weight"])
    return distiller, []


STAGE = techniques.Stage("distill", DEFAULTS, check, prepare, role="teacher", order=40)
