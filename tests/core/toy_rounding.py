"""A toy technique written against the core contract alone: weight rounding.

Every kernel computes as `round(kernel / step) * step` (straight-through
gradient), applied by a `WeightWrapper`, registered with one line. Nothing in
`tfcompress/` names it, yet strip, export, the report, recipes and
TensorBoard handle it (see test_toy_technique.py).
"""

import keras
import numpy as np

from tfcompress import core
from tfcompress.core import rules

RULES = {keras.layers.Dense: ("kernel",), keras.layers.Conv2D: ("kernel",)}


@keras.saving.register_keras_serializable("tfcompress_toy")
class RoundWeights(core.WeightWrapper):
    order = 20  # after pruning (10), before quantization (30)

    def __init__(self, layer, step=0.05, **kwargs):
        super().__init__(layer, **kwargs)
        self.step = float(step)

    def target_weights(self):
        layer = self.computing_layer()
        names = rules.lookup(layer, RULES) or ()
        return [w for w in layer.weights if w.name in names]

    def transform_weights(self, values, training):
        rounded = [keras.ops.round(v / self.step) * self.step for v in values]
        return [v + keras.ops.stop_gradient(r - v) for v, r in zip(values, rounded)]

    def get_config(self):
        return {**super().get_config(), "step": self.step}


def round_weights(model, step=0.05):
    def wrap(layer):
        base = layer.computing_layer() if isinstance(layer, core.WeightWrapper) else layer
        if rules.lookup(base, RULES) is None:
            return core.copy_layer(layer)
        return RoundWeights(core.copy_layer(layer), step=step)

    return core.map_layers(model, wrap)


def section(model, histograms=False):
    wrappers = [w for w in core.find(model, RoundWeights) if w.built]
    if not wrappers:
        return None
    scalars = {f"{w.name}/unique_values": float(len(np.unique(w.baked_weights()[0])))
               for w in wrappers}
    return core.Section(scalars, {}, {"unique values": [r"rounding/.*/unique_values$"]})


def columns(model):
    wrappers = core.find(model, RoundWeights)
    if not wrappers:
        return {}
    values = np.concatenate([w.baked_weights()[0].ravel() for w in wrappers])
    return {"unique kernel values": len(np.unique(values))}


def check(s):
    if not isinstance(s["step"], (int, float)) or not s["step"] > 0:
        raise ValueError(f"'round.step' must be a number > 0, got {s['step']!r}.")


def prepare(model, recipe, steps_in_stage=None):
    return round_weights(model, recipe["round"]["step"]), []


TECHNIQUE = core.register(core.Technique(
    "rounding", section=section, columns=columns,
    stage=core.Stage("round", {"step": 0.05, "epochs": 1}, check, prepare, order=20)))
