"""One bad training row must never become a model that crashes the phone.

A NaN pixel in one of 256 images, then QAT (or pruning) and export: the
learned ranges stay finite and the skipped batches are reported, the
exports refuse the NaN weights with an error naming them and write nothing,
and a flatbuffer with NaN scales is reported by `verify` instead of being run
(LiteRT ends the process with a segmentation fault on one)."""

import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import cli, examples
from tfcompress.core import nonfinite

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def poisoned(digits):
    (x, y), _, _ = digits
    x, y = x[:256].copy(), y[:256]
    x[3, 2, 2, 0] = np.nan  # one pixel of one image, in the first batch
    return x, y


def _ranges(model):
    return {v.path: np.asarray(v) for v in model.variables if v.path.endswith(("_min", "_max"))}


def test_qat_ranges_stay_finite_skipped_batches_are_reported(poisoned, tmp_path):
    x, y = poisoned
    qat = tfc.quantization.quantize_model(examples.digits_cnn())
    qat.compile(keras.optimizers.Adam(1e-3), LOSS)
    with pytest.warns(RuntimeWarning, match=r"NaN/Inf values.*'quantize_image"):
        qat.fit(x, y, batch_size=32, epochs=1, verbose=0,
                callbacks=[tfc.CompressionSummaries(str(tmp_path / "logs"))])
    ranges = _ranges(qat)
    assert ranges and all(np.all(np.isfinite(v)) for v in ranges.values())
    skipped = nonfinite.skipped_batches(qat)
    assert skipped["quantize_image"] == 1  # the one batch with the NaN pixel
    assert len(skipped) > 1  # NaN reaches the layers behind it, and then their weights
    with warnings.catch_warnings():  # reported once, not again for the same counts
        warnings.simplefilter("error", RuntimeWarning)
        nonfinite.warn_skipped(qat)

    # The NaN weights (plain Keras: a NaN loss makes NaN gradients) are refused.
    for kwargs in ({"mode": "int8"}, {"mode": "int8", "io_type": "int8"}, {"mode": "float"}):
        target = tmp_path / f"qat_{len(kwargs)}_{kwargs['mode']}.tflite"
        with pytest.raises(ValueError, match=r"non-finite values.*'conv2d/kernel'.*Nothing was"):
            tfc.export.to_tflite(qat, target, **kwargs)
        assert not target.exists()
    with pytest.raises(ValueError, match="non-finite values"):
        tfc.export.to_saved_model(qat, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()

    qat.save(tmp_path / "qat.keras")
    out = tmp_path / "cli.tflite"
    assert cli.main(["convert", str(tmp_path / "qat.keras"), "--to", "int8", "--out",
                     str(out)]) == 1
    assert not out.exists()


def test_terminate_on_nan_still_stops_fit(poisoned):
    """Skipped range statistics do not hide a NaN loss from Keras' TerminateOnNaN.

    The NaN pixel (batch 1) poisons the ranges' statistics; whether it reaches the loss
    depends on how TensorFlow's fake-quant kernels treat NaN (TF 2.21's turn NaN weights
    finite), so the loss is made NaN directly too: one NaN sample weight in batch 3.
    """
    x, y = poisoned
    weights = np.ones(len(y), "float32")
    weights[2 * 32 + 5] = np.nan
    qat = tfc.quantization.quantize_model(examples.digits_cnn())
    qat.compile(keras.optimizers.Adam(1e-3), LOSS)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"])))
    qat.fit(x, y, sample_weight=weights, batch_size=32, epochs=3, verbose=0, shuffle=False,
            callbacks=[record, keras.callbacks.TerminateOnNaN()])
    # Keras stops at the first batch whose loss is NaN/Inf, as documented
    assert not np.isfinite(seen[-1]) and np.all(np.isfinite(seen[:-1]))
    assert int(qat.optimizer.iterations) == len(seen) <= 3
    assert all(np.all(np.isfinite(v)) for v in _ranges(qat).values())


def test_nan_weights_after_a_poisoned_pruning_fit_are_refused(poisoned, tmp_path):
    x, y = poisoned
    pruned = tfc.pruning.prune_low_magnitude(
        examples.digits_cnn(), pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0))
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    stripped = tfc.pruning.strip_pruning(pruned)
    for kwargs in ({"mode": "float"}, {"mode": "int8", "representative_data": x[4:200]}):
        with pytest.raises(ValueError, match=r"non-finite values.*kernel"):
            tfc.export.to_tflite(pruned, tmp_path / "p.tflite", **kwargs)
    with pytest.raises(ValueError, match="non-finite values"):
        tfc.export.to_saved_model(stripped, tmp_path / "saved")
    assert not (tmp_path / "p.tflite").exists() and not (tmp_path / "saved").exists()


def test_inf_in_calibration_data_is_refused(digits, tmp_path):
    (x, y), _, _ = digits
    model = examples.digits_cnn()
    calibration = x[:100].copy()
    calibration[17, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"representative_data.*NaN/Inf.*sample 17"):
        tfc.export.to_tflite(model, tmp_path / "m.tflite", mode="int8",
                             representative_data=calibration)
    assert not (tmp_path / "m.tflite").exists()
    # the finite rows alone calibrate a finite, working model
    good = np.delete(calibration, 17, axis=0)
    flat = tfc.export.to_tflite(model, tmp_path / "m.tflite", mode="int8",
                                representative_data=good)
    tfc.export.finite.check_flatbuffer(flat)


_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    import numpy as np, keras, tensorflow as tf
    import tfcompress as tfc
    from tfcompress.export import signature

    x = np.random.default_rng(0).random((64, 8), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    qat = tfc.quantization.quantize_model(keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]))
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, verbose=0)
    good = tfc.export.to_tflite(qat, mode="int8")  # a finite, working model ...
    runner = tfc.export.census.interpreter(good).get_signature_runner()
    print("RAN", next(iter(runner(**{k: x[:1] for k in runner.get_input_details()}).values())).shape)

    # ... and the same one with a NaN range, converted bypassing tfcompress's checks
    qat.variables[[v.path.endswith("range_min") for v in qat.variables].index(True)].assign(np.float32(np.nan))
    try:
        tfc.export.to_tflite(qat, mode="int8")
    except ValueError as error:
        print("REFUSED", "non-finite values" in str(error))
    with tempfile.TemporaryDirectory() as tmp:
        saved = signature.write(signature.prepare(qat), os.path.join(tmp, "sm"))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        bad = converter.convert()
    open(sys.argv[1], "wb").write(bad)
    try:
        tfc.export.verify(bad, qat, x)
    except ValueError as error:
        print("VERIFY", "non-finite scale" in str(error))
""")


@pytest.mark.slow
def test_a_nan_scale_flatbuffer_is_reported_not_run(tmp_path):
    """In a subprocess: a crash (exit -11) fails the test instead of killing pytest."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    bad = tmp_path / "nan_scale.tflite"
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(bad)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RAN (1, 3)" in out.stdout
    assert "REFUSED True" in out.stdout and "VERIFY True" in out.stdout, out.stdout
    # `tfcompress report` would run it too: it says so in one line instead
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8), "float32"), y=np.zeros(4, "int64"))
    out = subprocess.run([sys.executable, "-m", "tfcompress_cli", "report", str(bad),
                          "--data", str(tmp_path / "d.npz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("tfcompress report: error:") and "non-finite scale" in line
