import gzip
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcompress as tfc
import tfcompress as tfmot
from helpers import mlp, regression_data

L = keras.layers


def _fit(model, x, y, schedule=None, epochs=2):
    model.compile("adam", "mse")
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    return model


def test_tfmot_names_are_all_there():
    names = ["prune_low_magnitude", "ConstantSparsity", "PolynomialDecay", "UpdatePruningStep",
             "PruningSummaries", "strip_pruning", "prune_scope", "PrunableLayer",
             "PruningSchedule", "PruneLowMagnitude"]
    for name in names:
        assert getattr(tfmot.sparsity.keras, name) is getattr(tfc.pruning, name)


def test_import_never_imports_tfmot():
    code = ("import sys, tfcompress; "
            "bad = [m for m in sys.modules if m.startswith(('tensorflow_model_optimization', 'tf_keras'))]; "
            "assert not bad, bad; import os; assert os.environ.get('TF_USE_LEGACY_KERAS') is None")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_original_model_is_not_changed():
    base = mlp()
    before = [w.copy() for w in base.get_weights()]
    x, y = regression_data()
    _fit(tfc.pruning.prune_low_magnitude(
        base, pruning_schedule=tfc.pruning.ConstantSparsity(0.8, 0, frequency=1)), x, y)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_prunes_sequential_functional_and_nested_models():
    inner = keras.Sequential([keras.Input((16,)), L.Dense(8, name="inner_dense")], name="inner")
    inputs = keras.Input((16,))
    outputs = L.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    pruned = tfc.pruning.prune_low_magnitude(
        model, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    wrappers = tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)
    assert sorted(w.layer.name for w in wrappers) == ["head", "inner_dense"]
    x, y = regression_data(outputs=2)
    _fit(pruned, x, y)
    for w in wrappers:
        assert float(np.mean(w.masks[0])) == 0.5
    stripped = tfc.pruning.strip_pruning(pruned)
    assert not tfc.core.find(stripped, tfc.pruning.PruneLowMagnitude)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


def test_list_of_layers_and_single_layer():
    layers = tfc.pruning.prune_low_magnitude(
        [L.Dense(4), L.Dense(2)], pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    assert all(isinstance(l, tfc.pruning.PruneLowMagnitude) for l in layers)
    model = keras.Sequential([keras.Input((16,))] + layers)
    x, y = regression_data(outputs=2)
    _fit(model, x, y)
    assert float(np.mean(layers[0].masks[0])) == 0.5


def test_wrapping_twice_is_an_error():
    layer = tfc.pruning.prune_low_magnitude(L.Dense(4))
    with pytest.raises(ValueError, match="already wrapped"):
        tfc.pruning.prune_low_magnitude(layer)


class Custom(L.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

    def call(self, x):
        return x @ self.w


def test_unsupported_layer_error_names_it_and_the_fix():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, Custom(name="my_custom")(inputs))
    # by default the weights no rule covers stay dense, named in one warning
    with pytest.warns(UserWarning, match=r"left 1 weight dense.*my_custom/w \(Custom\)"):
        pruned = tfc.pruning.prune_low_magnitude(model)
    assert not tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)
    with pytest.raises(ValueError) as info:
        tfc.pruning.prune_low_magnitude(model, strict=True)
    message = str(info.value)
    for part in ("my_custom", "Custom", "Dense", "PrunableLayer", "weight_names"):
        assert part in message


def test_custom_layer_opts_in_by_weight_names_or_prunable_layer():
    class Declared(Custom, tfc.pruning.PrunableLayer):
        def get_prunable_weights(self):
            return [self.w]

    x, y = regression_data(outputs=3)
    schedule = tfc.pruning.ConstantSparsity(0.5, 0, frequency=1)
    for layer in (tfc.pruning.prune_low_magnitude(Custom(), schedule, weight_names=["w"]),
                  tfc.pruning.prune_low_magnitude(Declared(), schedule)):
        model = keras.Sequential([keras.Input((16,)), layer])
        _fit(model, x, y)
        assert float(np.mean(layer.masks[0])) == 0.5


def test_weightless_and_normalization_layers_pass_through():
    model = keras.Sequential([keras.Input((16,)), L.Dense(8), L.BatchNormalization(),
                              L.ReLU(), L.Dropout(0.1), L.Dense(2)])
    pruned = tfc.pruning.prune_low_magnitude(model)
    kinds = [type(l).__name__ for l in pruned.layers]
    assert kinds == ["PruneLowMagnitude", "BatchNormalization", "ReLU", "Dropout", "PruneLowMagnitude"]


class Subclassed(keras.Model):
    def __init__(self, wrap=False, pass_training=True):
        super().__init__()
        dense = L.Dense(8, activation="relu")
        schedule = tfc.pruning.ConstantSparsity(0.75, 0, frequency=1)
        self.hidden = tfc.pruning.prune_low_magnitude(dense, pruning_schedule=schedule) if wrap else dense
        self.out = L.Dense(2)
        self.pass_training = pass_training

    def call(self, x, training=None):
        if self.pass_training:
            return self.out(self.hidden(x, training=training))
        return self.out(self.hidden(x))


class NoTrainingArg(Subclassed):
    def call(self, x):
        return self.out(self.hidden(x))


def test_subclassed_model_that_drops_training_fails_loudly():
    with pytest.raises(RuntimeError, match="training=None"):
        _fit(NoTrainingArg(wrap=True), *regression_data(outputs=2))


def test_subclassed_model_error_shows_the_layer_level_way():
    with pytest.raises(ValueError, match="prune_low_magnitude\\(keras.layers.Dense"):
        tfc.pruning.prune_low_magnitude(Subclassed())


def test_subclassed_model_with_wrapped_layers_prunes():
    model = Subclassed(wrap=True)
    x, y = regression_data(outputs=2)
    _fit(model, x, y)
    assert float(np.mean(model.hidden.masks[0])) == 0.25
    plain = tfc.pruning.strip_pruning(model.hidden)
    assert isinstance(plain, L.Dense)
    assert float(np.mean(np.asarray(plain.kernel) == 0)) == 0.75
    np.testing.assert_allclose(plain(x), model.hidden(x), atol=1e-6)


def test_strip_on_unpruned_model_is_a_noop():
    model = mlp()
    assert tfc.pruning.strip_pruning(model) is model


def test_strip_keeps_zeros_and_shrinks_gzip(tmp_path):
    x, y = regression_data()
    base = keras.Sequential([keras.Input((16,)), L.Dense(256), L.Dense(4)])
    _fit(base, x, y, epochs=1)
    pruned = _fit(tfc.pruning.prune_low_magnitude(
        base, pruning_schedule=tfc.pruning.ConstantSparsity(0.8, 0, frequency=1)), x, y)
    stripped = tfc.pruning.strip_pruning(pruned)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0))
    assert float(np.mean(stripped.layers[0].kernel.numpy() == 0)) == pytest.approx(0.8, abs=1e-3)

    def gz(model, name):
        path = tmp_path / name
        model.save(path)
        return len(gzip.compress(path.read_bytes()))

    assert gz(stripped, "s.keras") < 0.6 * gz(base, "b.keras")


def test_prune_scope_loads_saved_model(tmp_path):
    pruned = tfc.pruning.prune_low_magnitude(mlp())
    pruned.save(tmp_path / "p.keras")
    with tfc.pruning.prune_scope():
        loaded = keras.saving.load_model(tmp_path / "p.keras")
    assert isinstance(loaded.layers[0], tfc.pruning.PruneLowMagnitude)


def test_bad_block_and_m_by_n_arguments():
    with pytest.raises(ValueError, match="block_pooling_type"):
        tfc.pruning.prune_low_magnitude(L.Dense(2), block_pooling_type="MIN")
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        tfc.pruning.prune_low_magnitude(L.Dense(2), sparsity_m_by_n=(4, 2))
    with pytest.raises(ValueError, match="pruning_schedule"):
        tfc.pruning.prune_low_magnitude(L.Dense(2), pruning_schedule=0.5)
    layer = tfc.pruning.prune_low_magnitude(L.Conv2D(2, 3), block_size=(2, 2))
    with pytest.raises(ValueError, match="2-D weights"):
        layer(np.zeros((1, 5, 5, 1), "float32"))


def test_wrapped_first_layer_gives_its_input_shape_to_sequential():
    # TFMOT's 2:4 guide: `input_shape=` on the wrapped first layer of a Sequential
    model = keras.Sequential([
        tfmot.sparsity.keras.prune_low_magnitude(L.Conv2D(4, 3, input_shape=(8, 8, 1))),
        L.Flatten(), L.Dense(2)])
    assert model.built and model.input_shape == (None, 8, 8, 1)
    model.compile("adam", "mse")
    # (n, 8, 8) images: Keras adds the channel axis, as for the unwrapped model
    model.fit(np.zeros((4, 8, 8)), np.zeros((4, 2)), verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        keras.Sequential([L.Dense(3, input_shape=(5,)), L.Dense(2)]))
    assert pruned.input_shape == (None, 5)


def test_wrapper_arguments_accept_numpy_integers():
    layer = tfc.pruning.prune_low_magnitude(
        L.Dense(4), block_size=np.array([1, 2]),
        pruning_schedule=tfc.pruning.ConstantSparsity(0.5, np.int64(0), frequency=np.int32(1)))
    m_by_n = tfc.pruning.prune_low_magnitude(L.Dense(4), sparsity_m_by_n=np.array([2, 4]))
    for wrapper in (layer, m_by_n):
        config = wrapper.get_config()
        json.dumps(config)
        restored = tfc.pruning.PruneLowMagnitude.from_config(config)
        assert restored.block_size == wrapper.block_size
        assert restored.sparsity_m_by_n == wrapper.sparsity_m_by_n
    assert layer.get_config()["block_size"] == [1, 2]
    assert m_by_n.get_config()["sparsity_m_by_n"] == [2, 4]


def test_rewrapping_a_users_own_layer_class_and_numpy_update_freq(tmp_path):
    class MyDense(keras.layers.Dense):  # not registered with Keras
        pass

    model = keras.Sequential([keras.Input((4,)), tfc.pruning.prune_low_magnitude(MyDense(3)),
                              keras.layers.Dense(2)])
    again = tfc.pruning.prune_low_magnitude(model)
    assert type(again.layers[0].layer) is MyDense
    qat = tfc.quantization.quantize_model(
        model, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
    assert any(type(getattr(layer, "layer", None)) is MyDense
               or type(getattr(getattr(layer, "layer", None), "layer", None)) is MyDense
               for layer in qat.layers)
    summaries = tfc.pruning.PruningSummaries(str(tmp_path), update_freq=np.int64(5))
    assert summaries.update_freq == 5 and type(summaries.update_freq) is int
