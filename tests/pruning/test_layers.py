"""Every supported layer type prunes inside fit, strips to a plain layer, and round-trips."""

import keras
import numpy as np
import pytest

import tfcompress as tfc

L = keras.layers


def _image(x):
    return x


CASES = {
    "Dense": (lambda: L.Dense(8), (6,)),
    "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=8, bias_axes="c"), (6,)),
    "Conv1D": (lambda: L.Conv1D(4, 3), (10, 3)),
    "Conv2D": (lambda: L.Conv2D(4, 3), (8, 8, 3)),
    "Conv3D": (lambda: L.Conv3D(4, 2), (4, 4, 4, 2)),
    "Conv1DTranspose": (lambda: L.Conv1DTranspose(4, 3), (10, 3)),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(4, 3), (6, 6, 3)),
    "SeparableConv1D": (lambda: L.SeparableConv1D(8, 3), (10, 4)),
    "SeparableConv2D": (lambda: L.SeparableConv2D(8, 3), (8, 8, 4)),
    "Embedding": (lambda: L.Embedding(50, 8), None),
    "LSTM": (lambda: L.LSTM(6), (5, 4)),
    "GRU": (lambda: L.GRU(6), (5, 4)),
    "SimpleRNN": (lambda: L.SimpleRNN(6), (5, 4)),
}


def _model(make, shape):
    if shape is None:
        inputs = keras.Input((5,), dtype="int32")
        x = make()(inputs)
    else:
        inputs = keras.Input(shape)
        x = make()(inputs)
    x = L.Flatten()(x) if len(x.shape) > 2 else x
    return keras.Model(inputs, L.Dense(1)(x))


def _data(shape, n=64):
    rng = np.random.default_rng(0)
    if shape is None:
        x = rng.integers(0, 50, (n, 5)).astype("int32")
    else:
        x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


def _fit_pruned(model, x, y, sparsity=0.5, epochs=1):
    schedule = tfc.pruning.ConstantSparsity(sparsity, begin_step=0, frequency=2)
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", "mse")
    pruned.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    return pruned


def _no_tfcompress_classes(model):
    return not any(type(l).__module__.startswith("tfcompress")
                   for l in model._flatten_layers(include_self=True, recursive=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_prunes_and_strips(name, tmp_path):
    make, shape = CASES[name]
    x, y = _data(shape)
    pruned = _fit_pruned(_model(make, shape), x, y)
    wrappers = tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)
    target = [w for w in wrappers if type(w.layer).__name__ == name]
    assert target and target[0].masks, f"{name} was not wrapped"
    for mask in target[0].masks:
        assert abs(1 - float(np.mean(mask)) - 0.5) < 0.05
    stripped = tfc.pruning.strip_pruning(pruned)
    assert _no_tfcompress_classes(stripped)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)
    inner_names = {w.path.split("/")[-1] for w in target[0].targets}
    layer = next(l for l in stripped.layers if type(l).__name__ == name)
    for weight in layer.weights:
        if weight.name in inner_names:
            assert abs(float(np.mean(np.asarray(weight) == 0)) - 0.5) < 0.05
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


def test_multi_head_attention_projections_are_pruned():
    inputs = keras.Input((6, 8))
    x = L.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    model = keras.Model(inputs, L.Dense(1)(L.Flatten()(x)))
    x, y = _data((6, 8))
    pruned = _fit_pruned(model, x, y)
    wrapper = tfc.core.find(pruned, tfc.pruning.PruneLowMagnitude)[0]
    assert isinstance(wrapper.layer, L.MultiHeadAttention)
    assert len(wrapper.masks) == 4  # query, key, value, output
    for mask in wrapper.masks:
        assert abs(1 - float(np.mean(mask)) - 0.5) < 0.05
    stripped = tfc.pruning.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)


def test_depthwise_is_accepted_but_left_dense_unless_asked():
    inputs = keras.Input((8, 8, 3))
    x = L.DepthwiseConv2D(3, name="dw")(inputs)
    model = keras.Model(inputs, L.Dense(1)(L.Flatten()(x)))
    x, y = _data((8, 8, 3))
    pruned = _fit_pruned(model, x, y)
    assert isinstance(pruned.get_layer("dw"), L.DepthwiseConv2D)
    opted_in = tfc.pruning.prune_low_magnitude(
        model, weight_names={"DepthwiseConv2D": ["kernel"]})
    assert isinstance(opted_in.get_layer("prune_low_magnitude_dw"), tfc.pruning.PruneLowMagnitude)


def test_masked_embedding_feeds_wrapped_lstm():
    inputs = keras.Input((5,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(inputs)
    x = L.LSTM(4)(x)
    model = keras.Model(inputs, L.Dense(1)(x))
    x, y = _data(None)
    x[:, 3:] = 0  # padding
    pruned = _fit_pruned(model, x, y)
    ref = x.copy()
    ref[:, 3:] = 0
    other = x.copy()
    other[:, 3:] = 0
    # masked steps are ignored: output equals the output on the 3 real tokens
    short_in = keras.Input((3,), dtype="int32")
    stripped = tfc.pruning.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)
    emb, lstm, head = [l for l in stripped.layers if l.weights]
    short = keras.Model(short_in, head(lstm(emb(short_in))))
    np.testing.assert_allclose(short.predict(x[:, :3], verbose=0), pruned.predict(x, verbose=0),
                               atol=1e-5)


def test_block_sparsity_on_dense():
    model = keras.Sequential([keras.Input((16,)), L.Dense(16), L.Dense(1)])
    x, y = _data((16,))
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule, block_size=(4, 4))
    pruned.compile("adam", "mse")
    pruned.fit(x, y, batch_size=16, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
    mask = np.asarray(pruned.layers[0].masks[0])
    blocks = mask.reshape(4, 4, 4, 4)
    assert np.all(blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3)))
    assert mask.mean() == 0.5


def test_m_by_n_sparsity_on_conv_and_dense():
    inputs = keras.Input((8, 8, 8))
    x = L.Conv2D(8, 3)(inputs)
    x = L.Dense(4)(L.Flatten()(x))
    model = keras.Model(inputs, x)
    x, _ = _data((8, 8, 8))
    y = np.zeros((64, 4), "float32")
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule, sparsity_m_by_n=(2, 4))
    pruned.compile("adam", "mse")
    pruned.fit(x, y, batch_size=16, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
    stripped = tfc.pruning.strip_pruning(pruned)
    for layer in stripped.layers:
        if layer.weights:
            kernel = np.moveaxis(np.asarray(layer.weights[0]), -2, -1)
            groups = (kernel != 0).reshape(-1, 4)
            assert np.all(groups.sum(axis=1) == 2)
