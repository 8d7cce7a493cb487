"""The contract, measured: a technique written outside the package plugs in with one line.

`toy_rounding.py` (beside this file) is a whole technique — wrapper, rules,
TensorBoard section, recipe stage, report column — that touches no file of
tfcompress. strip, export, the report, recipes, TensorBoard, `.keras`
save/load and composition with pruning and QAT must all handle it.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress.core import techniques

STEP = 0.125


@pytest.fixture
def toy():
    import toy_rounding

    techniques.register(toy_rounding.TECHNIQUE)  # (again, if a test before removed it)
    yield toy_rounding
    techniques.unregister("rounding")


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(16, "relu"),
                             keras.layers.Dense(3, name="logits")], name="mlp")


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)


def _is_rounded(values):
    return np.allclose(values / STEP, np.round(values / STEP), atol=1e-4)


def test_toy_technique_strips_exports_saves_and_composes(toy, tmp_path):
    x, y = _data()
    pruned = tfc.pruning.prune_low_magnitude(
        _model(), pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    model = toy.round_weights(pruned, step=STEP)  # a chain: round(kernel * mask)
    assert isinstance(model.layers[0], toy.RoundWeights)
    assert isinstance(model.layers[0].layer, tfc.pruning.PruneLowMagnitude)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = str(tmp_path / "logs")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        tfc.core.steps.StepCallback(), tfc.CompressionSummaries(log_dir)])

    # save/load keeps the chain and its outputs
    model.save(tmp_path / "toy.keras")
    loaded = keras.saving.load_model(tmp_path / "toy.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)

    # strip bakes both transforms: zeros and multiples of the step, no wrapper left
    plain = tfc.strip(model)
    assert not tfc.core.find(plain, tfc.core.WeightWrapper)
    kernel = np.asarray(plain.layers[0].kernel)
    assert _is_rounded(kernel) and abs(np.mean(kernel == 0) - 0.5) < 0.05
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)

    # export strips it too; LiteRT computes what Keras computes
    flat = tfc.export.to_tflite(model, str(tmp_path / "toy.tflite"), overwrite=True)
    report = tfc.export.verify(flat, model, x[:32])
    assert report.max_abs_diff < 1e-5

    # QAT goes on top of the chain, and keeps computing with rounded weights
    qat = tfc.quantization.quantize_model(
        model, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
    inner = tfc.core.find(qat, tfc.quantization.QuantizeWrapper)[0]
    assert [type(w).__name__ for w in inner.chain()] == [
        "QuantizeWrapper", "RoundWeights", "PruneLowMagnitude"]

    # the report counts the toy's weights as strip leaves them, and shows its column
    table = tfc.report.compare({"toy": model, "toy.tflite": flat}, (x, y), latency_runs=2)
    assert table.loc["toy", "parameters"] == plain.count_params()
    assert table.loc["toy", "unique kernel values"] == len(np.unique(np.concatenate(
        [np.asarray(l.kernel).ravel() for l in plain.layers])))
    assert pd_isna(table.loc["toy.tflite", "unique kernel values"])

    # TensorBoard: the toy's own run and charts, beside pruning's
    runs = {os.path.basename(os.path.dirname(f)) for f in
            glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*"))}
    assert {"rounding", "pruning"} <= runs
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "rounding", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert any(t.startswith("rounding/") and t.endswith("/unique_values") for t in tags)


def pd_isna(value):
    import pandas as pd

    return pd.isna(value)


def test_toy_technique_is_a_recipe_stage(toy, tmp_path):
    x, y = _data()
    with pytest.raises(ValueError, match=r"round\.stepp.*step"):
        tfc.recipe.validate({"round": {"stepp": 0.1}})
    with pytest.raises(ValueError, match=r"round\.step"):
        tfc.recipe.validate({"round": {"step": -1}})
    table = tfc.recipe.run(_model(), {"round": {"step": STEP}, "prune": {"final_sparsity": 0.5},
                                      "export": {"tflite": ["float"]},
                                      "report": {"latency_runs": 2}},
                           (x, y), str(tmp_path / "out"))
    saved = keras.saving.load_model(tmp_path / "out" / "model.keras")
    assert not tfc.core.find(saved, tfc.core.WeightWrapper)
    kernel = np.asarray(saved.layers[0].kernel)
    assert _is_rounded(kernel) and abs(np.mean(kernel == 0) - 0.5) < 0.05
    assert "model_float.tflite" in table.index
    assert os.path.isdir(tmp_path / "out" / "logs" / "train" / "rounding")


def test_without_the_toy_nothing_knows_it():
    assert "rounding" not in [t.name for t in techniques.registered()]
    assert "round" not in tfc.recipe.SCHEMA
