"""Real models built from composite layers, pruned and made quantization-aware.

For a keras-rs DCN-v2 (`FeatureCross`, with and without `projection_dim`), a
keras-rs DLRM (`DotInteraction`), a keras-hub `BertTextClassifier` (random
weights from a small config) and a user's gated block: prune every supported
kernel inside (50 %, constant schedule, a few steps), strip, convert to float
TFLite and compare with Keras in LiteRT; then make the float model
quantization-aware, train a few steps, convert to int8 TFLite (the QAT
ranges, no calibration data) and count the ops that run in int8.

    python scripts/bench_composite.py
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import tfcompress as tfc  # noqa: E402
from tfcompress import examples  # noqa: E402


class GatedBlock(keras.layers.Layer):
    """A user's composite layer: two Dense sublayers and a gate weight of its own."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.value = keras.layers.Dense(units)
        self.gate_dense = keras.layers.Dense(units, activation="sigmoid")

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones")

    def call(self, x):
        return self.value(x) * self.gate_dense(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def gated_block(n=64, seed=0):
    x = keras.Input((6,), name="x")
    model = keras.Model(x, keras.layers.Dense(1, name="head")(GatedBlock(8)(x)), name="gated")
    data = np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")
    return model, data, data[:, :1] * 2


MODELS = {"keras-rs DCN-v2": lambda: examples.dcn_v2(None),
          "keras-rs DCN-v2 (projection_dim=4)": lambda: examples.dcn_v2(4),
          "keras-rs DLRM": examples.dlrm, "keras-hub BertTextClassifier": examples.bert_classifier,
          "user GatedBlock": gated_block}


def _loss(model):
    units = model.outputs[0].shape[-1]
    if model.name == "gated":
        return "mse"
    return "binary_crossentropy" if units == 1 else keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)


def measure(name, build):
    keras.utils.set_random_seed(0)
    model, x, y = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = tfc.pruning.prune_low_magnitude(
            model, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("adam", _loss(model))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    masks = [m for w in tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude) for m in w.masks]
    zeros = sum(float(np.size(m) - np.sum(m)) for m in masks)
    sparsity = zeros / sum(np.size(m) for m in masks)
    plain = tfc.strip(pruned)
    float_diff = tfc.export.verify(tfc.export.to_tflite(plain), plain, x).max_abs_diff

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tfc.quantization.quantize_model(plain)
    named = " ".join(str(w.message) for w in caught if "stay float" in str(w.message))
    qat.compile("adam", _loss(model))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    quantized = len(tfc.core.find(qat, tfc.quantization.QuantizeWrapper))
    try:
        report = tfc.export.verify(tfc.export.to_tflite(qat, mode="int8"), qat, x)
        ops = [op for op in report.ops if op.name not in ("QUANTIZE", "DEQUANTIZE")]
        int8 = sum(op.kind == "int8" for op in ops)
        status = f"int8 TFLite: {int8}/{len(ops)} ops int8, max diff {report.max_abs_diff:.3g}"
    except Exception as error:  # reported in the table: what the next issue has to fix
        status = f"int8 conversion failed: {type(error).__name__}: {str(error)[:80]}"
    return {"model": name, "pruned kernels": len(masks), "sparsity reached": sparsity,
            "TFLite max diff (float)": float_diff, "QAT wrappers": quantized,
            "named as float": "composite" in named or "no quantization config" in named,
            "QAT status": status}


def main():
    rows = [measure(name, build) for name, build in MODELS.items()]
    print(pd.DataFrame(rows).set_index("model").to_markdown(floatfmt=".3g"))


if __name__ == "__main__":
    main()
