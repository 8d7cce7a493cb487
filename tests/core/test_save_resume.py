"""A model mid-pruning saves, loads with plain keras, and resumes the schedule exactly."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from helpers import mask_zeros, regression_data

SCHEDULE = tfc.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=40, frequency=5)


def _model():
    keras.utils.set_random_seed(3)
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(4)])
    model = tfc.pruning.prune_low_magnitude(base, pruning_schedule=SCHEDULE)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _fit(model, x, y, epochs):
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])


def _masks(model):
    return [np.asarray(m) for w in tfc.core.find(model, tfc.pruning.PruneLowMagnitude)
            for m in w.masks]


def test_save_load_resume_matches_uninterrupted_run(tmp_path):
    x, y = regression_data(n=256)  # 16 steps per epoch; schedule ends at step 40

    uninterrupted = _model()
    _fit(uninterrupted, x, y, epochs=4)

    first = _model()
    _fit(first, x, y, epochs=2)  # stop at step 32, mid-schedule
    assert 0 < tfc.pruning.sparsity_logs(first)["global_sparsity"] < 0.8
    path = tmp_path / "mid.keras"
    first.save(path)
    resumed = keras.saving.load_model(path)  # plain keras; tfcompress registered its classes
    assert list(mask_zeros(resumed).values()) == list(mask_zeros(first).values())
    for a, b in zip(_masks(resumed), _masks(first)):
        np.testing.assert_array_equal(a, b)
    assert tfc.pruning.sparsity_logs(resumed)["pruning_step"] == 32
    assert int(resumed.optimizer.iterations) == 32
    _fit(resumed, x, y, epochs=2)

    for a, b in zip(_masks(resumed), _masks(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(resumed.predict(x, verbose=0), uninterrupted.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert tfc.pruning.sparsity_logs(resumed)["global_sparsity"] == tfc.pruning.sparsity_logs(
        uninterrupted)["global_sparsity"]


def test_loads_in_a_fresh_process_that_imports_tfcompress(tmp_path):
    import subprocess
    import sys

    model = _model()
    path = tmp_path / "m.keras"
    model.save(path)
    code = (f"import tfcompress, keras; m = keras.saving.load_model(r'{path}'); "
            "print(type(m.layers[0]).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("PruneLowMagnitude")


def _prune_and_quantize(model):
    pruned = tfc.pruning.prune_low_magnitude(model)
    return tfc.quantization.quantize_model(
        pruned, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())


@pytest.mark.parametrize("wrap", [
    tfc.pruning.prune_low_magnitude, tfc.quantization.quantize_model, _prune_and_quantize],
    ids=["prune", "qat", "prune+qat"])
def test_wrapped_models_hold_and_save_each_weight_once(wrap, tmp_path):
    from tfcompress import examples

    dense = examples.digits_cnn()
    wrapped = wrap(dense)
    ids = [id(w) for w in wrapped.weights]
    assert len(ids) == len(set(ids))
    dense.save(tmp_path / "dense.keras")
    wrapped.save(tmp_path / "wrapped.keras")
    # masks, ranges and step counters are small beside a second copy of every kernel
    size = (tmp_path / "wrapped.keras").stat().st_size
    dense_size = (tmp_path / "dense.keras").stat().st_size
    extra = 1.0 if wrap is tfc.quantization.quantize_model else 2.0  # masks: one per kernel
    assert size < dense_size * extra + 60_000, (size, dense_size)
