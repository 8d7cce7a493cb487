"""Transformers under quantization-aware training, to a fully-int8 TFLite graph.

A plain-Keras block (MultiHeadAttention, LayerNormalization, GELU, residual
adds) and keras-hub's BERT classifier (token, position and segment
embeddings, TransformerEncoders, tanh pooler; small config, random init) go
through `quantize_model`, a short fit, and `to_tflite(mode="int8")`, and are
read op by op in LiteRT: every FULLY_CONNECTED, BATCH_MATMUL and GATHER runs
int8 and no op computes in float between the input QUANTIZE and the output
DEQUANTIZE. Padding masks hold in int8, shapes stay dynamic, and a `.keras`
round trip keeps every range.
"""

import warnings

import keras
import numpy as np
import pytest

import tfcompress as tfc
from helpers import float_compute, interpreter, op_census
from tfcompress import examples

INT8_KERNELS = {"FULLY_CONNECTED", "BATCH_MATMUL", "GATHER"}


def _block_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8)).astype("float32"), rng.integers(0, 10, n)


def _qat(model, x, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tfc.quantization.quantize_model(model)
    left_float = [str(w.message) for w in caught if "float" in str(w.message)]
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return qat, left_float


@pytest.fixture(scope="module")
def block():
    keras.utils.set_random_seed(0)
    x, y = _block_data()
    qat, left_float = _qat(examples.transformer_block(), x, y)
    return qat, left_float, x


@pytest.fixture(scope="module")
def bert():
    keras.utils.set_random_seed(0)
    model, x, y = examples.bert_classifier()
    qat, left_float = _qat(model, x, y)
    return qat, left_float, x, tfc.export.to_tflite(qat, mode="int8")


def _int8_end_to_end(flat):
    census = op_census(flat)
    # GATHERs of int32 shapes (dynamic batch and length) are shape arithmetic
    kernels = [op for op in census if op[0] in INT8_KERNELS and op[1][0] != "int32"]
    assert kernels
    for name, inputs, outputs in kernels:
        assert outputs == ["int8"], (name, inputs, outputs)
        if name != "GATHER":  # GATHER's second input is the ids
            assert set(inputs[:2]) == {"int8"}, (name, inputs, outputs)
    assert float_compute(census) == [], float_compute(census)
    return census


def test_block_quantizes_every_op_to_int8_with_int8_io(block):
    qat, left_float, x = block
    assert left_float == []
    census = _int8_end_to_end(tfc.export.to_tflite(qat, mode="int8"))
    names = {op[0] for op in census}
    assert {"BATCH_MATMUL", "SOFTMAX", "MEAN", "RSQRT", "SQUARED_DIFFERENCE", "GELU"} <= names
    flat = tfc.export.to_tflite(qat, mode="int8", io_type="int8")
    runner = interpreter(flat).get_signature_runner()
    (input_name, detail), = runner.get_input_details().items()
    (output_detail,) = runner.get_output_details().values()
    assert detail["dtype"] == np.int8 and output_detail["dtype"] == np.int8
    census = op_census(flat)
    assert "QUANTIZE" not in {op[0] for op in census} and float_compute(census) == []
    scale, zero = detail["quantization"]
    q = np.clip(np.round(x[:1] / scale + zero), -128, 127).astype(np.int8)
    out_scale, out_zero = output_detail["quantization"]
    logits = (next(iter(runner(**{input_name: q}).values())).astype("float32") - out_zero) * out_scale
    expected = qat.predict(x[:1], verbose=0)
    assert np.abs(logits - expected).max() < 0.1 * np.abs(expected).max() + 4 * out_scale


def test_keras_hub_bert_is_int8_from_embeddings_to_logits(bert):
    qat, left_float, x, flat = bert
    assert left_float == []
    census = _int8_end_to_end(flat)
    assert sum(op[0] == "GATHER" and op[2] == ["int8"] for op in census) >= 2  # token, segment
    assert sum(op[0] == "BATCH_MATMUL" for op in census) == 4  # 2 layers x (scores, context)


def _run(flat, features):
    interp = interpreter(flat)
    runner = interp.get_signature_runner()
    return next(iter(runner(**{k: v.astype("int32") for k, v in features.items()}).values()))


def test_padding_mask_holds_in_int8(bert):
    """Tokens behind the padding mask change nothing, in Keras and in the int8 file."""
    qat, _, x, flat = bert
    rng = np.random.default_rng(1)
    features = {k: v[:4].copy() for k, v in x.items()}
    features["padding_mask"][:, 5:] = 0
    other = {k: v.copy() for k, v in features.items()}
    other["token_ids"][:, 5:] = rng.integers(0, 100, (4, 3))
    np.testing.assert_allclose(qat.predict(other, verbose=0), qat.predict(features, verbose=0),
                               atol=1e-5)
    padded, changed = _run(flat, features), _run(flat, other)
    np.testing.assert_array_equal(padded, changed)
    expected = qat.predict(features, verbose=0)
    assert np.abs(padded - expected).max() < 0.1 * np.abs(expected).max() + 1e-2


def test_batch_and_sequence_length_stay_dynamic(bert):
    qat, _, x, flat = bert
    interp = interpreter(flat)
    runner = interp.get_signature_runner()
    for detail in runner.get_input_details().values():
        assert list(detail["shape_signature"]) == [-1, -1], detail
    for batch, length in ((3, 8), (2, 5), (1, 8)):
        features = {k: v[:batch, :length] for k, v in x.items()}
        out = _run(flat, features)
        expected = qat.predict(features, verbose=0)
        assert out.shape == expected.shape
        assert np.abs(out - expected).max() < 0.1 * np.abs(expected).max() + 1e-2


def test_keras_round_trip_keeps_every_range(bert, tmp_path):
    qat, _, x, _ = bert
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    # (Dropout's seed-generator states are numbered per process, not per model)
    before = {v.path: np.asarray(v) for v in qat.variables if "seed_generator" not in v.path}
    after = {v.path: np.asarray(v) for v in loaded.variables if "seed_generator" not in v.path}
    assert sorted(before) == sorted(after)
    ranges = [p for p in before if p.endswith(("_min", "_max"))]
    assert len(ranges) > 100 and any("inner" in p for p in ranges)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


@pytest.mark.slow
def test_samples_passed_to_a_qat_encoder_change_nothing_and_crash_nothing(bert):
    qat, _, x, flat = bert
    # a fully QAT graph needs no calibration: the samples are not run through the converter's
    # calibrator, which aborted the whole process on the digits encoder below
    assert tfc.export.to_tflite(qat, mode="int8", representative_data=x) == flat
    (tokens, labels), _, _ = examples.digits_tokens()
    keras.utils.set_random_seed(0)
    encoder, _ = _qat(examples.digits_encoder(num_layers=1, hidden_dim=16, intermediate_dim=32),
                      {k: v[:64] for k, v in tokens.items()}, labels[:64])
    plain = tfc.export.to_tflite(encoder, mode="int8")
    assert tfc.export.to_tflite(encoder, mode="int8", representative_data=tokens) == plain
