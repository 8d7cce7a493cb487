"""TFLite export in every mode, verified with the real converter and LiteRT.

Real Keras models trained a few epochs (once per module), real conversions,
the real LiteRT interpreter. Errors, atomic writes and SavedModels are in
test_export_errors_serving.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tfcompress as tfc
from tfcompress import export

COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- models, trained once per module (`cnn` is in conftest.py) -----------------
@pytest.fixture(scope="module")
def eval_x(digits):
    """Validation + test images: 540 digits, so 99 % allows 5 disagreements."""
    _, (xv, _), (xt, _) = digits
    return np.concatenate([xv, xt])


@pytest.fixture(scope="module")
def cnn_int8(cnn, digits):
    (x, _), _, _ = digits
    return export.to_tflite(cnn, mode="int8", representative_data=x)


def _compute_kinds(report):
    return {op.kind for op in report.ops if op.name in COMPUTE}


# -- float ---------------------------------------------------------------------
def test_float_matches_keras_and_runs_any_batch_size(cnn, eval_x, tmp_path):
    path = tmp_path / "digits.tflite"
    flat = export.to_tflite(cnn, path)
    assert path.read_bytes() == flat
    report = export.verify(str(path), cnn, eval_x)
    assert report.max_abs_diff <= 1e-5
    assert report.agreement == 1.0 and report.agreement_kind == "top-1"
    assert report.int8_ops == [] and {"CONV_2D", "FULLY_CONNECTED"} <= set(report.float_ops)
    assert set(report.weights) <= {"float32", "int32"}
    assert report.bytes == len(flat) and 0 < report.gzip_bytes < len(flat)
    assert report.latency_ms > 0

    runner = Interpreter(model_content=flat).get_signature_runner("serving_default")
    assert list(runner.get_input_details()) == ["image"]
    assert runner.get_input_details()["image"]["shape_signature"].tolist() == [-1, 8, 8, 1]
    for batch in (1, 7):
        out = runner(image=eval_x[:batch])["logits"]
        expected = np.asarray(cnn(eval_x[:batch], training=False))
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_flatten_and_reshape_export_as_one_reshape_at_any_batch():
    # Keras 3 reshapes to the batch size read at run time (SHAPE, STRIDED_SLICE, PACK,
    # RESHAPE in TFLite); the serving signature is traced with a constant shape instead
    inputs = keras.Input((4, 4, 2), name="image")
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    x = keras.layers.Reshape((-1, 3))(keras.layers.MaxPooling2D()(x))  # (4, 3) from (2, 2, 3)
    x = keras.layers.Reshape((6, 2))(keras.layers.Activation("relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(x)))
    flat = export.to_tflite(model)
    names = [op["op_name"] for op in Interpreter(model_content=flat)._get_ops_details()]
    assert "RESHAPE" in names and not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(names)
    runner = Interpreter(model_content=flat).get_signature_runner("serving_default")
    x = np.random.default_rng(0).normal(size=(7, 4, 4, 2)).astype("float32")
    for batch in (1, 7):
        out = next(iter(runner(image=x[:batch]).values()))
        np.testing.assert_allclose(out, model(x[:batch]), atol=1e-5)
    assert keras.layers.Flatten.call.__qualname__ == "Flatten.call"  # restored after tracing
    assert keras.layers.Reshape.call.__qualname__ == "Reshape.call"


def test_float_dict_input_click_model(click):
    model, features, clicks = click
    flat = export.to_tflite(model)
    report = export.verify(flat, model, (features, clicks), max_samples=2000)
    assert report.max_abs_diff <= 1e-5
    assert report.agreement_kind == "threshold 0.5" and report.agreement == 1.0
    # one sigmoid output with 0/1 labels, compiled without metrics: scored by AUC
    assert report.metric == "auc" and report.keras_accuracy is None
    assert abs(report.keras_score - report.artifact_score) < 1e-3 and report.keras_score > 0.6
    runner = Interpreter(model_content=flat).get_signature_runner()
    assert set(runner.get_input_details()) == {"user", "item", "context"}
    assert list(runner.get_output_details()) == ["click"]


def test_float_sequential_with_embedding_batchnorm_pooling():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((6,), dtype="int32", name="tokens"),
        keras.layers.Embedding(50, 8),
        keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(3),
    ])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (64, 6)).astype("int32")
    bn = model.layers[1]  # non-trivial statistics, as after training
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8),
                    rng.uniform(0.5, 2, 8)])
    report = export.verify(export.to_tflite(model), model, x)
    assert report.max_abs_diff <= 1e-5
    assert "GATHER" in report.float_ops


# -- quantized -----------------------------------------------------------------
def test_dynamic_range_has_int8_weights(cnn, eval_x):
    report = export.verify(export.to_tflite(cnn, mode="dynamic"), cnn, eval_x)
    hybrid = [op.name for op in report.ops if op.kind == "hybrid"]
    assert hybrid.count("FULLY_CONNECTED") >= 1 and hybrid.count("CONV_2D") >= 1
    assert all("int8" in op.inputs[1:] for op in report.ops if op.kind == "hybrid")
    assert report.weights["int8"] > 0.9 * sum(report.weights.values())
    assert report.int8_ops == []  # activations stay float
    assert report.agreement >= 0.99


def test_full_int8_every_conv_and_dense_is_int8(cnn, cnn_int8, eval_x):
    report = export.verify(cnn_int8, cnn, eval_x)
    assert _compute_kinds(report) == {"int8"}
    assert {op.name for op in report.ops if op.name in COMPUTE} == set(COMPUTE)
    assert report.float_ops == []
    assert [op.name for op in report.ops if op.kind == "convert"] == ["QUANTIZE", "DEQUANTIZE"]
    assert set(report.weights) == {"int8", "int32"}
    assert report.agreement >= 0.99, report
    float_bytes = len(export.to_tflite(cnn))
    assert report.bytes < float_bytes / 3


def test_uint8_io(cnn, digits, eval_x):
    io_type = "uint8"  # (int8 I/O: see the click-model test)
    (x, _), _, _ = digits
    flat = export.to_tflite(cnn, mode="int8", representative_data=x[:100], io_type=io_type)
    runner = Interpreter(model_content=flat).get_signature_runner()
    assert runner.get_input_details()["image"]["dtype"] == np.dtype(io_type)
    assert runner.get_output_details()["logits"]["dtype"] == np.dtype(io_type)
    report = export.verify(flat, cnn, eval_x)  # quantizes inputs, dequantizes outputs
    assert report.agreement >= 0.99 and _compute_kinds(report) == {"int8"}


def test_int8_click_model_from_a_lazy_dataset(click):
    model, features, clicks = click
    pulled = []

    def endless_batches():  # an infinite stream: only what is needed may be read
        for i in range(10**9):
            pulled.append(i)
            rows = slice(32 * i % 5984, 32 * i % 5984 + 32)
            yield {k: v[rows] for k, v in features.items()}, clicks[rows]

    spec = ({k: tf.TensorSpec((None,), tf.int32) for k in features},
            tf.TensorSpec((None,), tf.float32))
    dataset = tf.data.Dataset.from_generator(endless_batches, output_signature=spec)
    flat = export.to_tflite(model, mode="int8", representative_data=dataset,
                            max_samples=100, io_type="int8")
    assert len(pulled) <= 100 // 32 + 3  # 4 batches hold 100 samples, plus read-ahead
    report = export.verify(flat, model, features)
    assert {op.kind for op in report.ops if op.name == "FULLY_CONNECTED"} == {"int8"}
    assert {op.kind for op in report.ops if op.name == "GATHER"} == {"int8"}
    assert report.agreement >= 0.97, report


def test_float16_weights(cnn, eval_x):
    report = export.verify(export.to_tflite(cnn, mode="float16"), cnn, eval_x)
    assert set(report.weights) == {"float16", "int32"}
    assert report.max_abs_diff < 2e-2 and report.agreement >= 0.99


def test_int16x8_activations(cnn, digits, eval_x):
    (x, _), _, _ = digits
    report = export.verify(
        export.to_tflite(cnn, mode="int16x8", representative_data=x[:100]), cnn, eval_x)
    assert _compute_kinds(report) == {"int16"} and report.agreement >= 0.99


def test_pruned_model_is_stripped_and_encoded_sparse(cnn, cnn_int8, digits, eval_x):
    (x, y), _, _ = digits
    schedule = tfc.pruning.ConstantSparsity(0.8, begin_step=0, frequency=4)
    pruned = tfc.pruning.prune_low_magnitude(cnn, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    assert tfc.pruning.sparsity_logs(pruned)["global_sparsity"] > 0.75
    # XNNPack (LiteRT's default) cannot run sparse int8 FULLY_CONNECTED weights:
    # refused at export time, naming the ops, instead of a file that fails on the phone.
    with pytest.raises(ValueError, match="XNNPack delegate fails on FULLY_CONNECTED"):
        export.to_tflite(pruned, mode="int8", representative_data=x[:100], sparse=True)
    # The wrapped model goes in as it is: to_tflite strips the wrappers itself.
    dense16 = export.to_tflite(cnn, mode="float16")
    flat = export.to_tflite(pruned, mode="float16", sparse=True)
    report = export.verify(flat, pruned, eval_x)
    assert report.sparse_tensors >= 3
    assert "DENSIFY" in [op.name for op in report.ops]
    assert report.bytes < 0.85 * len(dense16)  # same architecture, dense encoding
    assert not report.notes  # it ran in the default interpreter, XNNPack on
    assert report.agreement >= 0.97, report


def test_quantization_aware_model_gives_int8_without_data(cnn, digits, eval_x):
    (x, y), _, _ = digits
    qat = tfc.quantization.quantize_model(cnn)
    qat.compile(keras.optimizers.Adam(3e-4), LOSS)
    qat.fit(x, y, batch_size=32, epochs=1, verbose=0)
    report = export.verify(export.to_tflite(qat, mode="int8", io_type="int8"), qat, eval_x)
    assert _compute_kinds(report) == {"int8"}
    assert report.float_ops == [] and report.agreement >= 0.99, report


def test_data_from_unbatched_dataset_is_read_lazily(cnn, digits):
    (x, y), _, _ = digits
    inputs = export.signature.inputs(cnn)
    dataset = tf.data.Dataset.from_tensor_slices((x.astype("float64"), y)).repeat()
    arrays, labels = export.data.features(dataset, inputs, max_samples=5, with_labels=True)
    assert arrays["image"].shape == (5, 8, 8, 1) and arrays["image"].dtype == np.float32
    np.testing.assert_array_equal(labels, y[:5])
    with pytest.raises(ValueError, match="infinite tf.data.Dataset.*take"):
        export.data.features(dataset, inputs)
