"""Real models built from composite layers (keras-rs, keras-hub, a user's own block).

Each is pruned on every supported kernel inside its composite layers, however
deep, trained a few steps to the target sparsity, stripped and converted to
TFLite (float, within 1e-5 of Keras); the pruned model saves, loads and
resumes; and quantization-aware training takes it, names every layer it
leaves float, and its int8 TFLite model names every op that still runs in
float (keras-hub's BERT: none).
"""

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples
from tfcompress.export import signature

SPARSITY = 0.5
SCHEDULE = tfc.pruning.ConstantSparsity(SPARSITY, 0, frequency=1)
RULES = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)


@keras.saving.register_keras_serializable("tfcompress_tests")
class TwoTower(keras.layers.Layer):
    """A user's block: two Dense sublayers and a weight of its own."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.left = keras.layers.Dense(units, activation="relu")
        self.right = keras.layers.Dense(units)

    def build(self, input_shape):
        self.gate = self.add_weight(name="gate", shape=(self.units,), initializer="ones")

    def call(self, x):
        return self.left(x) * self.gate + self.right(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _user_block():
    x = keras.Input((6,), name="x")
    out = keras.layers.Dense(2, name="head")(TwoTower(8, name="two_tower")(x))
    model = keras.Model(x, out, name="user_block")
    x_data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    return model, x_data, x_data[:, :2] * 2


MODELS = {"dcn_v2": lambda: examples.dcn_v2(None), "dcn_v2_projection": lambda: examples.dcn_v2(4),
          "dlrm": examples.dlrm, "bert_classifier": examples.bert_classifier,
          "user_block": _user_block}
# weights no rule covers, left dense (and named in the warning)
LEFT_DENSE = {"bert_classifier": ["position_embedding/embeddings"],
              "user_block": ["two_tower/gate"]}


def _kernels(model):
    """Paths of every supported kernel in the model, at any depth."""
    found = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, RULES):
            name = "embeddings" if isinstance(layer, keras.layers.Embedding) else "kernel"
            found.update(w.path for w in layer.weights if w.name == name)
    return found


def _loss(model):
    if model.name == "user_block":
        return "mse"
    units = signature.name_outputs(model, model.outputs)
    return ("binary_crossentropy" if next(iter(units.values())).shape[-1] == 1
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))


@pytest.fixture(params=sorted(MODELS), scope="module")
def case(request):
    keras.utils.set_random_seed(0)
    model, x, y = MODELS[request.param]()
    return request.param, model, x, y


@pytest.mark.slow
def test_pruned_on_every_kernel_inside_stripped_and_exported(case, tmp_path):
    name, model, x, y = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    left = [str(w.message) for w in caught if "left" in str(w.message)]
    if name in LEFT_DENSE:
        (message,) = left
        for path in LEFT_DENSE[name]:
            assert path in message
        with pytest.raises(ValueError, match="no pruning rule covers"):
            tfc.pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE, strict=True)
    else:
        assert left == []

    wrappers = tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)
    targets = {t.path for w in wrappers for t in w.targets}
    # every kernel of the original model has its pruned twin in the new one
    assert len(targets) == len(_kernels(model)) > 0, (sorted(targets), sorted(_kernels(model)))

    pruned.compile(keras.optimizers.Adam(1e-3), _loss(model))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    for wrapper in wrappers:
        for mask in wrapper.masks:
            kept = float(np.mean(np.asarray(mask)))
            assert abs(kept - (1 - SPARSITY)) < 0.02, (mask.path, kept)

    stripped = tfc.pruning.strip_pruning(pruned)
    assert not tfc.core.find(stripped, tfc.pruning.PruneLowMagnitude)
    zeros = [1 - np.count_nonzero(w) / w.size for layer in
             stripped._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, RULES) for w in layer.get_weights()[:1]]
    assert zeros and min(zeros) >= SPARSITY - 0.02
    flat = tfc.export.to_tflite(stripped)
    report = tfc.export.verify(flat, stripped, x)
    assert report.max_abs_diff <= 1e-5, report

    # save mid-pruning, load with plain Keras, resume: the masks carry on
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_predict(loaded, x), _predict(pruned, x), atol=1e-6)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    assert tfc.pruning.sparsity_logs(loaded)["pruning_step"] == 8


def _predict(model, x):
    out = model.predict(x, verbose=0)
    return out if isinstance(out, np.ndarray) else np.concatenate(
        [np.asarray(v).reshape(len(v), -1) for v in keras.tree.flatten(out)], axis=1)


def test_quantization_aware_on_every_kernel_inside_naming_what_stays_float(case):
    name, model, x, y = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tfc.quantization.quantize_model(model)
    float_warnings = " ".join(str(w.message) for w in caught if "stay float" in str(w.message))
    wrappers = tfc.core.find(qat, tfc.quantization.QuantizeWrapper)
    # every supported kernel, however deep, computes fake-quantized
    targeted = {id(t) for w in wrappers for t in w.targets}
    kernels = [w for layer in qat._flatten_layers(recursive=True) if isinstance(layer, RULES)
               for w in layer.weights if w.name in ("kernel", "embeddings")]
    assert kernels and all(id(k) in targeted for k in kernels), name
    # nothing silently stays float: every layer with weights outside a quantization
    # wrapper is named when quantizing, every float op in the int8 model when exporting
    inside = {id(sub) for w in wrappers for sub in w._flatten_layers(recursive=True)}
    left = [layer.name for layer in qat._flatten_layers(include_self=False, recursive=True)
            if id(layer) not in inside and layer.weights and not isinstance(layer, keras.Model)
            and not isinstance(layer, tfc.quantization.QuantizeLayer)]
    for layer_name in left:
        assert layer_name in float_warnings, (layer_name, float_warnings)
    qat.compile(keras.optimizers.Adam(1e-4), _loss(model))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    out = _predict(qat, x)
    assert np.all(np.isfinite(out))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flat = tfc.export.to_tflite(qat, mode="int8")
    islands = " ".join(str(w.message) for w in caught if "still run in float" in str(w.message))
    floats = {op.name for op in tfc.export.census.ops(flat) if op.kind in ("float", "hybrid")}
    assert all(f"'{op}'" in islands for op in floats), (floats, islands)
    if name == "bert_classifier":  # every op between input and output runs int8
        assert not floats, floats


@pytest.mark.slow
def test_quantization_aware_composites_save_load_and_strip_with_pruning_kept(case, tmp_path):
    name, model, x, y = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
        pruned.compile(keras.optimizers.Adam(1e-4), _loss(model))
        pruned.fit(x, y, batch_size=16, epochs=1, verbose=0,
                   callbacks=[tfc.pruning.UpdatePruningStep()])
        qat = tfc.quantization.quantize_model(
            pruned, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
    qat.compile(keras.optimizers.Adam(1e-4), _loss(model))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfc.core.steps.StepCallback()])
    # the chain: every pruning wrapper sits inside a quantization wrapper
    chains = [w.chain() for w in tfc.core.find(qat, tfc.quantization.QuantizeWrapper)]
    assert any(isinstance(c[-1], tfc.pruning.PruneLowMagnitude) for c in chains)
    expected = _predict(qat, x)
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_allclose(_predict(loaded, x), expected, atol=1e-5)
    # strip bakes the masks and keeps the ranges: same outputs, pruning wrappers gone
    plain = tfc.strip(qat)
    assert not tfc.core.find(plain, tfc.pruning.PruneLowMagnitude)
    assert tfc.core.find(plain, tfc.quantization.QuantizeWrapper)
    np.testing.assert_allclose(_predict(plain, x), expected, atol=1e-5)
    kernels = [np.asarray(w) for layer in plain._flatten_layers(recursive=True)
               if isinstance(layer, RULES) for w in layer.weights if w.name == "kernel"]
    assert kernels and all(abs(np.mean(k == 0) - SPARSITY) < 0.05 for k in kernels if k.size > 8)
