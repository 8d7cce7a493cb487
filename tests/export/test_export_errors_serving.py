"""Export errors, atomic writes, SavedModels for serving, and the demo step.

Real models and real conversions: every error comes from the actual check or
the actual converter, and every "nothing was written" is read from disk.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress import export

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Cholesky(keras.layers.Layer):
    """Computes with tf.Cholesky, which has no TFLite builtin (TF Select has it)."""

    def call(self, x):
        m = keras.ops.reshape(x, (-1, 2, 2))
        m = keras.ops.matmul(m, keras.ops.transpose(m, (0, 2, 1))) + keras.ops.eye(2)
        return keras.ops.reshape(keras.ops.cholesky(m), (-1, 4))


class Erfinv(keras.layers.Layer):
    """Computes with tf.Erfinv: neither a TFLite builtin nor a TF Select op."""

    def call(self, x):
        return keras.ops.erfinv(x * 0.5)


def _with_layer(layer):
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))



@pytest.fixture(scope="module")
def click_saved_model(click, tmp_path_factory):
    """The click model as a SavedModel, and `saved_model_cli show --all` on it,
    started at once so that the CLI's TensorFlow import overlaps other tests."""
    model, _, _ = click
    path = export.to_saved_model(model, tmp_path_factory.mktemp("serving") / "click" / "1")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.Popen([cli, "show", "--all", "--dir", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    yield path, show
    if show.poll() is None:
        show.kill()
        show.wait()


# -- SavedModel ----------------------------------------------------------------
def test_saved_model_serves_named_inputs_with_dynamic_batch(click, click_saved_model):
    model, features, _ = click
    path, _ = click_saved_model
    serve = tf.saved_model.load(path).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert {k: (s.shape.as_list(), s.dtype) for k, s in specs.items()} == {
        k: ([None], tf.int32) for k in ("user", "item", "context")}
    for batch in (3, 5):
        rows = {k: v[:batch] for k, v in features.items()}
        out = serve(**{k: tf.constant(v) for k, v in rows.items()})
        assert list(out) == ["click"]
        np.testing.assert_allclose(out["click"], model(rows, training=False), atol=1e-6)
    report = export.verify(path, model, features)
    assert report.format == "saved_model" and report.max_abs_diff <= 1e-5


# -- errors that name the fix --------------------------------------------------
@pytest.mark.parametrize("make_data, message", [
    (lambda x, f: x[:, :4], r"input 'image' has shape \(1257, 4, 8, 1\).*\(num_samples, 8, 8, 1\)"),
    (lambda x, f: (x * 255).astype("uint8"), r"input 'image' has dtype uint8.*astype\('float32'\)"),
])
def test_representative_data_must_match_the_inputs(cnn, digits, make_data, message):
    (x, _), _, _ = digits
    with pytest.raises(ValueError, match=message):
        export.to_tflite(cnn, mode="int8", representative_data=make_data(x, None))


def test_representative_data_must_match_dict_inputs(click):
    model, features, _ = click
    floats = dict(features, user=features["user"].astype("float32"))
    with pytest.raises(ValueError, match=r"input 'user' has dtype float32.*astype\('int32'\)"):
        export.to_tflite(model, mode="int8", representative_data=floats)
    partial = {k: v for k, v in features.items() if k != "context"}
    with pytest.raises(ValueError, match=r"missing \['context'\]"):
        export.to_tflite(model, mode="int8", representative_data=partial)
    with pytest.raises(ValueError, match=r"single array but the model has 3 inputs"):
        export.to_tflite(model, mode="int8", representative_data=features["user"])


def test_int8_of_a_non_qat_model_needs_representative_data(cnn):
    with pytest.raises(ValueError, match=r"representative_data=x_train\[:200\].*mode='dynamic'"):
        export.to_tflite(cnn, mode="int8")


def test_unsupported_ops_are_named_and_nothing_is_written(tmp_path):
    model = _with_layer(Cholesky())
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"no TFLite builtin: Cholesky.*allow_tf_ops=True"):
        export.to_tflite(model, path)
    assert os.listdir(tmp_path) == []  # no file, no temporary leftovers
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="Cholesky"):
        export.to_tflite(model, path, overwrite=True)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.tflite"]

    flat = export.to_tflite(model, allow_tf_ops=True)
    assert "FlexCholesky" in [op.name for op in export.census.ops(flat)]
    with pytest.raises(RuntimeError, match=r"TF Select ops \['FlexCholesky'\].*allow_tf_ops"):
        export.verify(flat, model, np.ones((4, 4), "float32"))


def test_int16x8_refuses_integer_inputs_with_a_fix(click):
    model, features, _ = click
    with pytest.raises(ValueError, match="integer inputs.*mode='int8'"):
        export.to_tflite(model, mode="int16x8", representative_data=features)


def test_ops_without_any_kernel_are_named():
    with pytest.raises(ValueError, match=r"neither a TFLite builtin nor a TF Select kernel: Erfinv"):
        export.to_tflite(_with_layer(Erfinv()))


def test_existing_file_is_kept_unless_overwrite(cnn, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    # The path is checked before any conversion: this model could not convert.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_tflite(_with_layer(Cholesky()), path)
    assert path.read_bytes() == b"previous"
    flat = export.to_tflite(cnn, path, overwrite=True)
    assert path.read_bytes() == flat and os.listdir(tmp_path) == ["model.tflite"]


def test_unwritable_path_fails_before_converting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="Choose a path in a writable directory"):
        export.to_tflite(_with_layer(Cholesky()), blocker / "model.tflite")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        export.to_tflite(_with_layer(Cholesky()), tmp_path)


def test_argument_errors(cnn, digits):
    (x, _), _, _ = digits
    with pytest.raises(ValueError, match="Unknown mode='int4'"):
        export.to_tflite(cnn, mode="int4")
    with pytest.raises(ValueError, match="use it with mode='int8'"):
        export.to_tflite(cnn, mode="dynamic", io_type="int8")
    with pytest.raises(ValueError, match="does not use representative_data"):
        export.to_tflite(cnn, mode="float", representative_data=x)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*keras.Model\\(inputs"):
        export.to_tflite(model)


# -- atomic SavedModel writes, demo, CLI (last: it waited the longest) --------
def test_saved_model_write_is_atomic(cnn, digits, tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "keep.txt").write_text("previous")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_saved_model(cnn, path)
    assert os.listdir(path) == ["keep.txt"]

    class NotTraceable(keras.layers.Layer):  # builds, then fails when traced for export
        def compute_output_spec(self, x):
            return keras.KerasTensor(x.shape, x.dtype)

        def call(self, x):
            return x * float(np.asarray(x).sum())

    inputs = keras.Input((3,), name="x")
    broken = keras.Model(inputs, NotTraceable()(inputs))
    with pytest.raises(Exception):
        export.to_saved_model(broken, path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model"] and os.listdir(path) == ["keep.txt"]

    export.to_saved_model(cnn, path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model"] and "keep.txt" not in os.listdir(path)
    assert export.verify(str(path), cnn, digits[2][0]).max_abs_diff <= 1e-5


def test_demo_step_writes_int8_tflite_and_saved_model(cnn, digits, tmp_path, capsys):
    (x, _), (xv, yv), (xt, yt) = digits
    xt, yt = np.concatenate([xv, xt]), np.concatenate([yv, yt])
    report = export.demo_step(cnn, str(tmp_path), x[:200], xt, yt)
    assert sorted(os.listdir(tmp_path)) == ["model_int8.tflite", "saved_model"]
    assert report.agreement >= 0.99
    assert {op.kind for op in report.ops if op.name in ("CONV_2D", "FULLY_CONNECTED")} == {"int8"}
    assert report.artifact_accuracy >= report.keras_accuracy - 0.02
    printed = capsys.readouterr().out
    assert "agreement with Keras (top-1)" in printed and "model_int8.tflite" in printed


def test_saved_model_cli_lists_the_serving_signature(click_saved_model):
    _, show = click_saved_model
    listing, _ = show.communicate(timeout=300)
    assert show.returncode == 0
    assert "signature_def['serving_default']" in listing
    for name in ("user", "item", "context"):
        assert f"inputs['{name}'] tensor_info" in listing
    assert "outputs['click'] tensor_info" in listing and "shape: (-1, 1)" in listing
