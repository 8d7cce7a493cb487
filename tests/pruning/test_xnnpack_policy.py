"""PruneForLatencyOnXNNPack, unknown prune_low_magnitude arguments, and sparse exports
that must run in LiteRT's default interpreter (XNNPack on)."""

import os
import re

import keras
import numpy as np
import pytest

import tfcompress as tfc
import tfcompress as tfmot
from tfcompress import examples, export

L = keras.layers
POLICY = tfmot.sparsity.keras.PruneForLatencyOnXNNPack


def _pruned_names(model):
    return sorted(w.layer.name for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude))


def _stem(x, filters=8):
    x = L.ZeroPadding2D(1)(x)
    return L.Conv2D(filters, 3, strides=2, padding="valid", name="stem")(x)


def _mobilenet_like(size=16, width=16):
    """Stem, a stride-1 and a stride-2 depthwise-separable block, GAP, Dense head."""
    inputs = keras.Input((size, size, 3))
    x = L.ReLU(6.0)(L.BatchNormalization()(_stem(inputs)))
    x = L.ReLU(6.0)(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(width, 1, name="pw1")(x)))
    x = L.ZeroPadding2D(1)(x)
    x = L.ReLU(6.0)(L.DepthwiseConv2D(3, strides=2, padding="valid")(x))
    skip = L.Conv2D(2 * width, 1, name="pw2")(x)
    x = L.Add()([skip, L.Activation("relu")(L.Conv2D(2 * width, 1, name="pw3")(skip))])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def _prune(model, sparsity=0.8, **kwargs):
    pruned = tfc.pruning.prune_low_magnitude(
        model, pruning_schedule=tfc.pruning.ConstantSparsity(sparsity, 0, frequency=1),
        pruning_policy=POLICY(), **kwargs)
    shape = (4,) + tuple(model.input_shape[1:])
    pruned.compile("sgd", "mse")
    pruned.fit(np.random.default_rng(0).uniform(size=shape).astype("float32"),
               np.zeros((4,) + tuple(model.output_shape[1:]), "float32"), verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    return pruned


# -- the policy ----------------------------------------------------------------


def test_policy_prunes_exactly_the_1x1_convolutions():
    model = _mobilenet_like()
    pruned = _prune(model)
    assert _pruned_names(pruned) == ["pw1", "pw2", "pw3"]
    # Everything else is a plain copy: stem, depthwise, BN, head stay dense.
    stripped = tfc.pruning.strip_pruning(pruned)
    for layer in stripped.layers:
        if isinstance(layer, (L.Conv2D, L.Dense)):
            zeros = float(np.mean(np.asarray(layer.kernel) == 0))
            assert (zeros > 0.75) == (layer.name.startswith("pw")), (layer.name, zeros)
    assert tfmot.sparsity.keras.PruningPolicy is tfc.pruning.PruningPolicy
    assert isinstance(POLICY(), tfc.pruning.PruningPolicy)


def test_policy_follows_tfmot_on_nested_reused_and_already_pruned_models():
    nested = keras.Sequential([
        keras.Input((8, 8, 3)), L.ZeroPadding2D(1), L.Conv2D(4, 3, strides=2),
        keras.Sequential([L.Conv2D(8, 1), L.Conv2D(16, 1)]), L.GlobalAveragePooling2D()])
    assert len(_pruned_names(_prune(nested))) == 2

    inputs = keras.Input((8, 8, 3))
    shared = L.Conv2D(8, 1, name="shared")
    x = shared(shared(_stem(inputs)))
    residual = L.Conv2D(8, 1, name="residual")(x)
    x = (x + residual) * residual - residual  # bare keras.ops nodes
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    once = tfc.pruning.prune_low_magnitude(model, pruning_policy=POLICY())
    assert _pruned_names(once) == ["residual", "shared"]
    twice = tfc.pruning.prune_low_magnitude(once, pruning_policy=POLICY())
    assert _pruned_names(twice) == ["residual", "shared"]


def test_weight_names_keeps_a_1x1_layer_dense():
    pruned = tfc.pruning.prune_low_magnitude(
        _mobilenet_like(), pruning_policy=POLICY(), weight_names={"pw3": []})
    assert _pruned_names(pruned) == ["pw1", "pw2"]


def _branch(*layers, size=8):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("model, message", [
    (lambda: _branch(L.Conv2D(8, 3, strides=2, padding="same"), L.Conv2D(8, 1),
                     L.GlobalAveragePooling2D()),
     r"does not reach the stem .*ZeroPadding2D\(1\) then Conv2D\(filters, 3, strides=2, "
     r"padding='valid'\)"),
    (lambda: _branch(L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2), L.Conv2D(8, 1),
                     L.AveragePooling2D(2)),
     r"output 'average_pooling2d\w*' is not computed from a GlobalAveragePooling2D"),
    (lambda: _branch(L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2), L.Conv2D(8, 1),
                     L.MaxPooling2D(2), L.GlobalAveragePooling2D()),
     r"Layer 'max_pooling2d\w*' \(MaxPooling2D\) is not supported for the "
     r"PruneForLatencyOnXNNPack pruning policy"),
    (lambda: _branch(L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2),
                     L.Conv2D(8, 3, padding="same"), L.GlobalAveragePooling2D()),
     r"\(Conv2D\) is not supported .*only 1x1 Conv2D with strides=1"),
    (lambda: _branch(L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2),
                     L.DepthwiseConv2D(3, strides=2, padding="same"), L.GlobalAveragePooling2D()),
     r"\(DepthwiseConv2D\) is not supported .*right after ZeroPadding2D\(1\)"),
    (lambda: keras.Sequential([L.ZeroPadding2D(1), L.Conv2D(4, 3, strides=2),
                               L.GlobalAveragePooling2D()]),
     r"is not built"),
])
def test_policy_rejects_models_xnnpack_cannot_run_sparsely(model, message):
    with pytest.raises(ValueError, match=message):
        tfc.pruning.prune_low_magnitude(model(), pruning_policy=POLICY())


def test_policy_needs_the_model():
    with pytest.raises(ValueError, match=r"checks a whole model.*a single layer"):
        tfc.pruning.prune_low_magnitude(L.Conv2D(4, 1), pruning_policy=POLICY())
    with pytest.raises(ValueError, match=r"checks a whole model.*a list of layers"):
        tfc.pruning.prune_low_magnitude([L.Conv2D(4, 1)], pruning_policy=POLICY())
    with pytest.raises(ValueError, match="must be a tfcompress.pruning.PruningPolicy"):
        tfc.pruning.prune_low_magnitude(_mobilenet_like(), pruning_policy="xnnpack")


# -- unknown keyword arguments --------------------------------------------------


@pytest.mark.parametrize("target", ["model", "list", "layer"])
def test_unknown_keyword_arguments_are_rejected(target):
    to_prune = {"model": lambda: keras.Sequential([keras.Input((4,)), L.Dense(2)]),
                "list": lambda: [L.Dense(2)], "layer": lambda: L.Dense(2)}[target]
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['bogus_kw'\]\. "
                                        r"It takes pruning_schedule, .*weight_names"):
        tfc.pruning.prune_low_magnitude(to_prune(), bogus_kw=1)
    with pytest.raises(TypeError, match=r"Did you mean pruning_schedule= instead of "
                                        r"pruning_shedule="):
        tfc.pruning.prune_low_magnitude(to_prune(), pruning_shedule=None)


def test_layer_arguments_are_for_a_single_layer():
    assert tfc.pruning.prune_low_magnitude(L.Dense(2), name="pruned").name == "pruned"
    with pytest.raises(TypeError, match="apply to a single layer only"):
        tfc.pruning.prune_low_magnitude(keras.Sequential([keras.Input((4,)), L.Dense(2)]),
                                        name="pruned")


# -- sparse exports run where they are deployed ------------------------------------


def _default_interpreter_runs(flat, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_policy_pruned_sparse_export_runs_in_default_litert_and_matches_keras(tmp_path):
    pruned = _prune(_mobilenet_like(32, width=64), sparsity=0.85)
    path = tmp_path / "sparse.tflite"
    flat = export.to_tflite(pruned, path, sparse=True)
    assert path.read_bytes() == flat
    ops = [op.name for op in export.census.ops(flat)]
    assert ops.count("DENSIFY") == 3 and export.census.weights(flat)[1] == 3
    assert len(flat) < 0.8 * len(export.to_tflite(pruned))
    x = np.random.default_rng(1).uniform(size=(1, 32, 32, 3)).astype("float32")
    expected = np.asarray(tfc.pruning.strip_pruning(pruned)(x, training=False))
    np.testing.assert_allclose(_default_interpreter_runs(flat, x), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.fixture(scope="module")
def cnn_pruned_90():
    """The digits CNN pruned to 90 % by a few UpdatePruningStep steps."""
    (x, y), _, _ = examples.digits()
    keras.backend.clear_session()  # layer names 'dense', 'logits', as a user sees them
    keras.utils.set_random_seed(0)
    pruned = tfc.pruning.prune_low_magnitude(
        examples.digits_cnn(), pruning_schedule=tfc.pruning.ConstantSparsity(0.9, 0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:96], y[:96], batch_size=32, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    assert tfc.pruning.sparsity_logs(pruned)["global_sparsity"] > 0.85
    return pruned, x


def test_int8_sparse_cnn_fails_at_export_naming_the_ops_and_writes_nothing(cnn_pruned_90,
                                                                         tmp_path):
    pruned, x = cnn_pruned_90
    path = tmp_path / "cnn.tflite"
    with pytest.raises(ValueError) as error:
        export.to_tflite(pruned, path, mode="int8", representative_data=x[:100], sparse=True)
    message = str(error.value)
    assert re.search(r"XNNPack delegate fails on FULLY_CONNECTED ×2 \(layers 'dense\w*', "
                     r"'logits'\) reading sparse-encoded weights in an int8 model", message)
    assert "sparse=False" in message and "PruneForLatencyOnXNNPack" in message
    assert "No file was written" in message
    assert os.listdir(tmp_path) == []
    # The two fixes both give a file that runs in the default interpreter.
    dense = export.to_tflite(pruned, path, mode="int8", representative_data=x[:100])
    _default_interpreter_runs(dense, x[:1])
    _default_interpreter_runs(export.to_tflite(pruned, sparse=True), x[:1])


def test_dynamic_range_sparse_export_names_the_failing_ops(cnn_pruned_90):
    # the graph is one XNNPack partition (Flatten is one RESHAPE), and XNNPack reports the
    # first op of a partition it fails on: the three convolutions
    pruned, _ = cnn_pruned_90
    with pytest.raises(ValueError, match=r"fails on CONV_2D ×3 \(layers 'conv2d\w*', "
                                         r"'conv2d\w*', 'conv2d\w*'\) reading sparse-encoded "
                                         r"weights with int8 weights \(mode='dynamic'\)"):
        export.to_tflite(pruned, mode="dynamic", sparse=True)


def test_float16_sparse_cnn_runs_in_default_litert(cnn_pruned_90):
    pruned, x = cnn_pruned_90
    flat = export.to_tflite(pruned, mode="float16", sparse=True)
    expected = np.asarray(pruned(x[:1], training=False))
    np.testing.assert_allclose(_default_interpreter_runs(flat, x[:1]), expected,
                               atol=0.05 * np.abs(expected).max())
