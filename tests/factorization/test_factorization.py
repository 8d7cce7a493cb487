"""Low-rank factorization: exact at full rank, rank rules, parameter counts, fit, save/load,
TFLite, composition with pruning and QAT, errors, and the recipe stage. Real models, no mocks."""

import re
import textwrap
import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import factorization as F
from tfcompress import recipe
from tfcompress.core import techniques
from tfcompress.factorization import svd

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _decaying(shape, rng, decay=0.85):
    """A matrix with singular values decay**i (a trained kernel's shape of spectrum)."""
    m, n = shape
    u, _ = np.linalg.qr(rng.normal(size=(m, m)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    k = min(m, n)
    return (u[:, :k] * decay ** np.arange(k)) @ v[:, :k].T


def _fit(model, x, y, steps=4, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), LOSS)
    model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=steps, verbose=0)
    return model


def _mlp(rng):
    inputs = keras.Input((48,), name="features")
    x = L.Dense(64, activation="relu", name="hidden_1")(inputs)
    x = L.Dense(40, activation="relu", name="hidden_2")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    for layer in model.layers[1:]:
        layer.kernel.assign(_decaying(layer.kernel.shape, rng).astype("float32"))
    x = rng.normal(size=(256, 48)).astype("float32")
    return _fit(model, x, rng.integers(0, 10, 256)), x


def _embedding_model(rng):
    ids = keras.Input((7,), dtype="int32", name="ids")
    e = L.Embedding(120, 24, mask_zero=True, name="table")(ids)
    pooled = L.GlobalAveragePooling1D()(e)
    model = keras.Model(ids, L.Dense(4, name="head")(pooled))
    x = rng.integers(1, 120, (256, 7)).astype("int32")
    x[:, 5:] = 0  # padding: the mask matters for the pooled output
    return _fit(model, x, rng.integers(0, 4, 256)), x


def _einsum_model(rng):
    inputs = keras.Input((6, 12), name="sequence")
    h = L.EinsumDense("abc,cd->abd", (6, 16), bias_axes="d", activation="relu",
                      name="project")(inputs)
    h = L.EinsumDense("abc,cde->abde", (6, 4, 5), bias_axes="de", name="heads")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(h)))
    x = rng.normal(size=(128, 6, 12)).astype("float32")
    return _fit(model, x, rng.integers(0, 3, 128)), x


def _matrices(model):
    """{name: (m, n) matrix} of the Dense/EinsumDense kernels and Embedding tables."""
    out = {}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, L.Embedding):
            out[layer.name] = np.asarray(layer.embeddings)
        elif isinstance(layer, L.EinsumDense):
            k = np.asarray(layer.kernel)
            out[layer.name] = k.reshape(k.shape[0], -1)  # ours: contracted axis first
        elif isinstance(layer, L.Dense):
            out[layer.name] = np.asarray(layer.kernel)
    return out


def _rank_of(model, name):
    first = model.get_layer(name + F.SUFFIX)
    return int(first.weights[0].shape[-1])


@pytest.mark.parametrize("build", [_mlp, _embedding_model, _einsum_model])
def test_full_rank_reproduces_the_outputs(build, rng):
    model, x = build(rng)
    full = {name: min(w.shape) for name, w in _matrices(model).items()}
    factored = F.factorize(model, rank=full)
    assert sorted(F.factorized_layers(factored)) == sorted(full)
    np.testing.assert_allclose(factored.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    assert factored.output_names == model.output_names
    assert F.factorized_layers(model) == []  # the original is untouched
    if build is _embedding_model:
        # the mask travels through the Dense that now ends the embedding
        assert factored.get_layer("table").output._keras_mask is not None


def test_energy_keeps_that_fraction_of_the_squared_singular_values(rng):
    model, _ = _mlp(rng)
    spectra = {name: svd.singular_values(w) for name, w in _matrices(model).items()}
    high, low = F.factorize(model, energy=0.9), F.factorize(model, energy=0.5)
    assert F.factorized_layers(high)  # the decaying spectra save parameters
    for name in F.factorized_layers(high):
        s, r = spectra[name], _rank_of(high, name)
        assert svd.kept_energy(s, r) >= 0.9 > svd.kept_energy(s, r - 1)  # the smallest r
        assert _rank_of(low, name) < r and svd.kept_energy(s, _rank_of(low, name)) >= 0.5
    assert low.count_params() < high.count_params() < model.count_params()


def _expected_params(model, factored):
    total = 0
    done = set(F.factorized_layers(factored))
    for layer in model.layers:
        if layer.name in done:
            m, n = _matrices(model)[layer.name].shape
            r = _rank_of(factored, layer.name)
            bias = getattr(layer, "bias", None)
            total += r * (m + n) + (int(np.prod(bias.shape)) if bias is not None else 0)
        else:
            total += layer.count_params()
    return total


@pytest.mark.parametrize("build", [_mlp, _embedding_model, _einsum_model])
def test_parameters_fall_as_stated(build, rng):
    model, _ = build(rng)
    factored = F.factorize(model, ratio=0.25)
    assert F.factorized_layers(factored)
    assert factored.count_params() == _expected_params(model, factored)
    for name in F.factorized_layers(factored):
        m, n = _matrices(model)[name].shape
        r = _rank_of(factored, name)
        assert r * (m + n) <= 0.25 * m * n < (r + 1) * (m + n)


def test_trains_saves_loads_and_converts_to_smaller_tflite(rng, tmp_path):
    model, x = _mlp(rng)
    factored = F.factorize(model, ratio=0.3, layers=["hidden_1", "hidden_2"])
    done = F.factorized_layers(factored)
    assert done == ["hidden_1", "hidden_2"]  # logits stays one layer
    before = [np.asarray(w) for w in factored.weights]
    _fit(factored, x, rng.integers(0, 10, len(x)), steps=3)
    assert any(not np.allclose(a, np.asarray(b)) for a, b in zip(before, factored.weights))
    path = tmp_path / "factored.keras"
    factored.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), factored.predict(x, verbose=0))
    assert F.factorized_layers(loaded) == done
    flat, original = tfc.export.to_tflite(factored), tfc.export.to_tflite(model)
    ops = [op.name for op in tfc.export.census.ops(flat)]
    assert ops.count("FULLY_CONNECTED") == 2 * len(done) + 1
    assert len(flat) < len(original)


def test_composes_with_pruning_and_quantization_aware_training(rng):
    model, x = _mlp(rng)
    y = rng.integers(0, 10, len(x))
    factored = _fit(F.factorize(model, energy=0.9), x, y, steps=2)
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfc.pruning.prune_low_magnitude(factored, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x, y, batch_size=32, steps_per_epoch=2, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    plain = tfc.strip(pruned)
    first = np.asarray(plain.get_layer("hidden_1" + F.SUFFIX).kernel)
    assert abs(float(np.mean(first == 0)) - 0.5) < 0.02
    qat = _fit(tfc.quantization.quantize_model(plain), x, y, steps=2)
    assert F.factorized_layers(qat) == F.factorized_layers(factored)  # the report's column
    flat = tfc.export.to_tflite(qat, mode="int8")
    fc = [op for op in tfc.export.census.ops(flat) if op.name == "FULLY_CONNECTED"]
    done = len(F.factorized_layers(factored))
    assert len(fc) == 2 * done + (3 - done)  # two ops per factorized Dense of the 3
    assert {op.kind for op in fc} == {"int8"}


def test_nested_multi_input_multi_output_models_and_bare_ops(rng):
    inner_in = keras.Input((16,))
    inner = keras.Model(inner_in, L.Dense(24, activation="relu", name="inner_dense")(inner_in),
                        name="inner")
    a, b = keras.Input((16,), name="a"), keras.Input((8,), name="b")
    h = keras.ops.concatenate([inner(a), L.Dense(24, name="side")(b)], axis=-1)
    out_1 = L.Dense(5, name="first_head")(keras.ops.relu(h))
    out_2 = L.Dense(2, name="second_head")(h)
    model = keras.Model({"a": a, "b": b}, [out_1, out_2])
    data = {"a": rng.normal(size=(8, 16)).astype("float32"),
            "b": rng.normal(size=(8, 8)).astype("float32")}
    factored = F.factorize(model, rank=10_000)  # clipped to full rank everywhere
    assert sorted(F.factorized_layers(factored)) == sorted(
        ["inner_dense", "side", "first_head", "second_head"])
    for got, want in zip(factored(data), model(data)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert factored.output_names == model.output_names
    sequential = keras.Sequential([keras.Input((16,)), L.Dense(32), L.Dense(4)])
    assert len(F.factorized_layers(F.factorize(sequential, rank=2))) == 2


def test_unsupported_layers_are_left_and_named_in_one_warning(rng):
    inputs = keras.Input((6, 12))
    per_head = L.EinsumDense("abc,bcd->abd", (6, 8), name="per_position")(inputs)
    attended = L.MultiHeadAttention(2, 4, name="attention")(per_head, per_head)
    model = keras.Model(inputs, L.Dense(64, name="wide")(L.Flatten()(attended)))
    with pytest.warns(UserWarning) as record:
        factored = F.factorize(model, ratio=0.3)
    ours = [str(w.message) for w in record if "factorize left" in str(w.message)]
    assert len(ours) == 1
    text = ours[0]
    assert "per_position" in text and "per-head" in text and "attention" in text
    assert F.factorized_layers(factored) == ["wide"]
    with pytest.raises(ValueError, match="inside the composite layer 'attention'"):
        F.factorize(model, ratio=0.3, layers=["query"])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(4)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of rank=, energy=, ratio= .got none of them"),
    ({"rank": 4, "energy": 0.9}, "exactly one of .* .got rank and energy"),
    ({"energy": 0.0}, r"energy must be a number in \(0, 1\]"),
    ({"energy": 1.5}, r"energy must be a number in \(0, 1\]"),
    ({"ratio": -0.1}, r"ratio must be a number in \(0, 1\]"),
    ({"rank": 0}, "rank must be an int >= 1"),
    ({"rank": True}, "rank must be an int >= 1"),
    ({"rank": 4, "layers": ["dense_9"]}, "has no layer 'dense_9'; its layers: .*logits"),
    ({"rank": 4, "layers": "hidden_1"}, "layers must be a list of layer names"),
    ({"rank": {"features": 2}}, "'features' is of type InputLayer"),
])
def test_bad_arguments_say_how_to_fix_them(rng, kwargs, match):
    model, _ = _mlp(rng)
    with pytest.raises(ValueError, match=match):
        F.factorize(model, **kwargs)


def test_subclassed_and_wrapped_models_are_refused(rng):
    sub = _Subclassed()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*functional or Sequential"):
        F.factorize(sub, rank=2)
    model, _ = _mlp(rng)
    with pytest.raises(ValueError, match="Factorize the float model first"):
        F.factorize(tfc.pruning.prune_low_magnitude(model), rank=2)


@pytest.mark.parametrize("section, names", [
    ({}, ["factorize.rank", "factorize.energy", "factorize.ratio", "got none"]),
    ({"energy": 0.9, "ratio": 0.5}, ["'factorize.energy', 'factorize.ratio'"]),
    ({"energy": 1.2}, ["'factorize.energy' must be a number in (0, 1]"]),
    ({"ratio": 0}, ["'factorize.ratio' must be a number in (0, 1]"]),
    ({"rank": 0}, ["'factorize.rank' must be an int >= 1"]),
    ({"rank": {"dense": "4"}}, ["'factorize.rank' must be"]),
    ({"rank": 4, "layers": "dense"}, ["'factorize.layers' must be", "list of layer names"]),
    ({"rank": 4, "epochs": 0}, ["'factorize.epochs' must be an int >= 1"]),
    ({"ratio": 0.5, "rnak": 4}, ["factorize.rnak", "energy"]),
])
def test_recipe_section_is_validated_naming_the_setting(section, names):
    with pytest.raises(ValueError) as error:
        recipe.validate({"factorize": section})
    for name in names:
        assert name in str(error.value)


def test_stage_prepare_runs_before_pruning(rng):
    model, x = _mlp(rng)
    stage = techniques.stages()["factorize"]
    assert stage.order < techniques.stages()["prune"].order and stage.role == "transform"
    r = recipe.validate({"factorize": {"ratio": 0.25, "layers": ["hidden_1"]}})
    factored, callbacks = stage.prepare(model, r)
    assert callbacks == [] and F.factorized_layers(factored) == ["hidden_1"]
    with pytest.raises(ValueError, match="'factorize.layers': .*no layer 'nope'"):
        stage.prepare(model, recipe.validate({"factorize": {"ratio": 0.25, "layers": ["nope"]}}))
    both = {"factorize": {"energy": 0.9},
            "prune": {"final_sparsity": 0.5, "end_step": 4, "frequency": 1}}
    wrapped, callbacks = recipe.prepare(model, both)
    inner = {w.layer.name for w in tfc.core.find(wrapped, tfc.pruning.PruneLowMagnitude)}
    assert "hidden_1" + F.SUFFIX in inner  # the factors are pruned, not the old kernel
    wrapped.compile(**recipe.compile_kwargs(both))
    wrapped.fit(x, rng.integers(0, 10, len(x)), batch_size=64, epochs=1, callbacks=callbacks,
                verbose=0)
    assert techniques.columns(tfc.strip(wrapped))["factorized layers"] == len(
        F.factorized_layers(F.factorize(model, energy=0.9)))


def _public():
    objects = [F.factorize, F.factorized_layers, F.stage.prepare, F.api.einsum_plan]
    objects += [getattr(svd, n) for n in ("singular_values", "kept_energy", "energy_rank",
                                          "ratio_rank", "saves", "choose_rank", "factors")]
    return objects


@pytest.mark.parametrize("obj", _public(), ids=lambda o: o.__name__)
def test_docstring_examples_run(obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", obj.__doc__, flags=re.S)
    assert blocks
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the examples are clean
        for code in blocks:
            exec(compile(textwrap.dedent(code), f"<{obj.__name__} example>", "exec"), {})
