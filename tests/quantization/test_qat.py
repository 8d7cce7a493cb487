"""QAT → TFLite with Optimize.DEFAULT → int8 end to end, run by the real LiteRT interpreter."""

import json

import keras
import numpy as np
import pytest

import tfcompress as tfc
import tfcompress as tfmot
from helpers import float_compute, interpreter, op_census, run_tflite, tflite_bytes
from tfcompress import examples

L = keras.layers
Q = tfc.quantization
INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _accuracy(logits, y):
    return float(np.mean(np.argmax(logits, -1) == y))


@pytest.fixture(scope="module")
def digits_qat():
    keras.utils.set_random_seed(0)
    (x, y), _, (xt, yt) = examples.digits()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = examples.digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3), loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=6, verbose=0)
    qat = Q.quantize_model(model)
    qat.compile(keras.optimizers.Adam(3e-4), loss, metrics=["accuracy"])
    qat.fit(x, y, batch_size=32, epochs=2, verbose=0)
    return model, qat, xt, yt


@pytest.fixture(scope="module")
def digits_tflite(digits_qat):
    return tflite_bytes(digits_qat[1])


def test_digits_cnn_is_int8_end_to_end_and_as_accurate(digits_qat, digits_tflite):
    model, qat, xt, yt = digits_qat
    content = digits_tflite
    census = op_census(content)
    kernels = [op for op in census if op[0] in INT8_OPS]
    assert len(kernels) == 6
    for name, inputs, outputs in kernels:
        assert inputs[:2] == ["int8", "int8"] and outputs == ["int8"], (name, inputs, outputs)
    assert "BATCH_NORM" not in {op[0] for op in census} and "MUL" not in {op[0] for op in census}
    assert float_compute(census) == []
    float_accuracy = _accuracy(model.predict(xt, verbose=0), yt)
    int8_accuracy = _accuracy(run_tflite(content, xt), yt)
    assert int8_accuracy >= float_accuracy - 0.005, (float_accuracy, int8_accuracy)


def test_exports_keep_the_float_models_output_and_input_names(digits_qat):
    """An app reads outputs by name: QAT must not rename `logits` to its wrapper's name."""
    model, qat = digits_qat[:2]
    float_runner = interpreter(tfc.export.to_tflite(model)).get_signature_runner()
    qat_runner = interpreter(tfc.export.to_tflite(qat, mode="int8")).get_signature_runner()
    assert list(qat_runner.get_output_details()) == list(float_runner.get_output_details()) == [
        "logits"]
    assert list(qat_runner.get_input_details()) == list(float_runner.get_input_details())


def test_int8_io_has_no_quantize_ops_at_all(digits_qat):
    _, qat, xt, yt = digits_qat
    content = tflite_bytes(qat, int8_io=True)
    names = [op[0] for op in op_census(content)]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    it = interpreter(content)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    assert _accuracy(run_tflite(content, xt), yt) > 0.95


def test_per_channel_weights_and_folded_batch_norm(digits_tflite):
    it = interpreter(digits_tflite)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            scales = tensors[op["inputs"][1]]["quantization_parameters"]["scales"]
            assert len(scales) > 1  # one scale per output channel
        if op["op_name"] == "FULLY_CONNECTED":
            assert len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"]) == 1


def test_per_channel_dense_and_einsum_kernels_export_as_trained():
    """Asked for, Dense and EinsumDense kernels train with one range per output unit
    (the converter used to reject that: "mismatched quantized axes"), and the
    flatbuffer's per-channel integers are the QAT model's own rounding."""
    keras.utils.set_random_seed(0)
    per_channel = Q.Default8BitQuantizeConfig({"kernel": "per_channel"})
    inputs = keras.Input((4, 6))
    x = Q.quantize_annotate_layer(L.EinsumDense("abc,cde->abde", (4, 3, 5), bias_axes="de"),
                                  per_channel)(inputs)
    x = L.Reshape((4, 15))(x)
    x = Q.quantize_annotate_layer(L.EinsumDense("abcd,cde->abe", (4, 7)), per_channel)(
        L.Reshape((4, 3, 5))(x))
    x = Q.quantize_annotate_layer(L.Dense(3), per_channel)(L.Flatten()(x))
    qat = Q.quantize_apply(Q.quantize_annotate_model(keras.Model(inputs, x)))
    data = np.random.default_rng(0).normal(size=(64, 4, 6)).astype("float32")
    qat.compile("adam", "mse")
    qat.fit(data, np.zeros((64, 3)), epochs=1, verbose=0)
    flat = tfc.export.to_tflite(qat, mode="int8")
    it = interpreter(flat)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    stored = []
    for op in it._get_ops_details():
        if op["op_name"] == "FULLY_CONNECTED":
            scales = tensors[op["inputs"][1]]["quantization_parameters"]["scales"]
            assert len(scales) == tensors[op["inputs"][1]]["shape"][0] > 1
            stored.append(it.get_tensor(op["inputs"][1]).astype("float32") * scales[:, None])
    trained = []
    for wrapper in qat.layers:
        if isinstance(wrapper, Q.QuantizeWrapper):
            (quantizer,) = wrapper._weight_quantizers
            assert isinstance(quantizer, Q.MatmulWeightsQuantizer)
            (kernel,) = wrapper.transform_weights([wrapper.layer.kernel.value], training=False)
            kernel = np.asarray(kernel)
            trained.append(kernel.reshape(
                int(np.prod(kernel.shape[:quantizer.contracted])), -1).T)
    assert [k.shape for k in trained] == [(15, 6), (7, 15), (3, 28)]
    for kernel in trained:
        assert any(w.shape == kernel.shape and np.allclose(w, kernel, rtol=1e-6, atol=1e-9)
                   for w in stored), kernel.shape
    assert float_compute(op_census(flat)) == []
    np.testing.assert_allclose(run_tflite(flat, data[:8]), qat.predict(data[:8], verbose=0),
                               atol=0.05)


def _zoo():
    inp = keras.Input((16, 16, 3))
    a = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inp)))
    b = L.SeparableConv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.Add()([a, b])
    c = L.Concatenate()([x, L.Conv2D(4, 1, activation="relu")(x)])
    c = L.Conv2D(8, 1, activation="tanh")(c)
    c = L.Dropout(0.2)(L.AveragePooling2D(2)(c))
    t = L.MaxPooling2D(2)(L.Conv2DTranspose(4, 3, strides=2, padding="same")(c))
    m = L.Multiply()([t, L.Activation("sigmoid")(t)])
    r = L.Reshape((8 * 8 * 4,))(m)
    r = keras.ops.add(r[:, :200], 1.0)  # bare ops in the graph: slicing and an add
    d = L.EinsumDense("ab,bc->ac", output_shape=16, bias_axes="c")(L.Dense(32, activation="relu")(r))
    return keras.Model(inp, L.Softmax()(L.Dense(5)(d)))


def test_layer_zoo_and_bare_ops_stay_int8():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    qat = Q.quantize_model(_zoo())
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, rng.integers(0, 5, 64), epochs=2, verbose=0)
    content = tflite_bytes(qat)
    census = op_census(content)
    assert float_compute(census) == []
    requantize = [op for op in census if op[0] == "QUANTIZE" and op[1] == ["int8"]]
    assert requantize == []
    names = {op[0] for op in census}
    assert {"DEPTHWISE_CONV_2D", "CONCATENATION", "TANH", "TRANSPOSE_CONV", "LOGISTIC",
            "SOFTMAX", "STRIDED_SLICE", "AVERAGE_POOL_2D"} <= names
    np.testing.assert_allclose(run_tflite(content, x[:8]), qat.predict(x[:8], verbose=0),
                               atol=2 / 256)


def _auc(scores, labels):
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_click_model_int8_auc_within_0005_of_float():
    features, clicks = examples.click_logs(n=24000)
    split = 20000
    train = {k: v[:split] for k, v in features.items()}
    test = {k: v[split:] for k, v in features.items()}
    keras.utils.set_random_seed(0)
    model = examples.click_model()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(train, clicks[:split], batch_size=128, epochs=4, verbose=0)
    float_auc = _auc(model.predict(test, verbose=0).ravel(), clicks[split:])
    qat = Q.quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    qat.fit(train, clicks[:split], batch_size=128, epochs=1, verbose=0)
    content = tflite_bytes(qat)
    census = op_census(content)
    assert float_compute(census) == []
    gathers = [op for op in census if op[0] == "GATHER"]
    assert len(gathers) == 3 and all(op[1][0] == "int8" for op in gathers)
    int8_auc = _auc(run_tflite(content, test).ravel(), clicks[split:])
    assert float_auc > 0.7
    assert int8_auc >= float_auc - 0.005, (float_auc, int8_auc)


def test_save_load_keeps_ranges_and_resumes(tmp_path, digits_qat):
    _, qat, xt, _ = digits_qat
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    ranges = lambda m: [(w.name, np.asarray(w)) for w in m.weights
                        if w.name.endswith(("_min", "_max"))]
    before, after = ranges(qat), ranges(loaded)
    assert [k for k, _ in before] == [k for k, _ in after] and len(before) > 10
    for (_, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(xt, verbose=0), qat.predict(xt, verbose=0))
    (x, y), _, _ = examples.digits()
    history = loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_prune_preserving_qat_keeps_zeros_in_int8_weights():
    (x, y), _, _ = examples.digits()
    keras.utils.set_random_seed(0)
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=60, frequency=10)
    pruned = tfc.pruning.prune_low_magnitude(examples.digits_cnn(), pruning_schedule=schedule)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile("adam", loss)
    pruned.fit(x[:640], y[:640], batch_size=32, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])  # 20 steps: still pruning
    with pytest.raises(ValueError, match="PrunePreserve"):
        Q.quantize_model(pruned)
    qat = Q.quantize_model(pruned, scheme=Q.Default8BitPrunePreserveQuantizeScheme())
    qat.compile("adam", loss)
    qat.fit(x[:1280], y[:1280], batch_size=32, epochs=1, verbose=0,
            callbacks=[tfc.pruning.UpdatePruningStep()])  # pruning continues to step 60
    prune_wrappers = tfc.core.find(qat, tfc.pruning.PruneLowMagnitude)
    masks = {w.layer.name: np.asarray(w.masks[0]) for w in prune_wrappers}
    assert all(abs(1 - m.mean() - 0.75) < 0.01 for m in masks.values())

    it = interpreter(tflite_bytes(qat))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    checked = 0
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            weights = it.get_tensor(op["inputs"][1])
            assert weights.dtype == np.int8
            zeros = np.mean(weights == 0)
            if zeros > 0.5:
                checked += 1
                assert abs(zeros - 0.75) < 0.02, (tensors[op["inputs"][1]]["name"], zeros)
    assert checked == len(masks)
    # and the float weights the layers compute with keep exactly the mask's zeros
    for wrapper in tfc.core.find(qat, Q.QuantizeWrapper):
        if isinstance(wrapper.layer, tfc.pruning.PruneLowMagnitude):
            effective = wrapper.baked_weights()[0]  # the chain: fake_quant(kernel * mask)
            mask = np.asarray(wrapper.layer.masks[0])
            assert np.all(effective[mask == 0] == 0)


def test_prune_preserving_qat_of_a_stripped_model_keeps_its_zeros(tmp_path):
    """TFMOT's documented flow: prune, strip, then quantize with the prune-preserving scheme."""
    (x, y), _, _ = examples.digits()
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        examples.digits_cnn(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.8, 0, frequency=1))
    pruned.compile("adam", loss)
    pruned.fit(x[:320], y[:320], batch_size=32, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = {l.name: np.asarray(l.kernel) for l in stripped.layers
               if isinstance(l, (L.Conv2D, L.Dense)) and not isinstance(l, L.DepthwiseConv2D)}
    zeros = {name: kernel == 0 for name, kernel in kernels.items()}
    assert all(abs(z.mean() - 0.8) < 0.01 for z in zeros.values()), {k: z.mean() for k, z in zeros.items()}

    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped), scheme)
    qat.compile(keras.optimizers.Adam(1e-3), loss)
    qat.fit(x[:640], y[:640], batch_size=32, epochs=2, verbose=0)
    qat.save(tmp_path / "pqat.keras")
    loaded = keras.saving.load_model(tmp_path / "pqat.keras")
    for model in (qat, loaded):
        for wrapper in tfc.core.find(model, Q.QuantizeWrapper):
            if wrapper.layer.name in zeros:
                effective = wrapper.transform_weights(wrapper.targets, False)[0].numpy()
                assert np.all(effective[zeros[wrapper.layer.name]] == 0), wrapper.name
                kept = ~zeros[wrapper.layer.name]  # and QAT trained the others
                assert not np.allclose(effective[kept], kernels[wrapper.layer.name][kept])
    it = interpreter(tflite_bytes(qat))
    int8_zeros = sorted(float(np.mean(it.get_tensor(op["inputs"][1]) == 0))
                        for op in it._get_ops_details() if op["op_name"] in ("CONV_2D",
                                                                            "FULLY_CONNECTED"))
    assert sum(abs(z - 0.8) < 0.02 for z in int8_zeros) == len(zeros), int8_zeros

    # the default scheme does not keep them (what the prune-preserving one is for)
    plain = Q.quantize_model(stripped)
    plain.compile(keras.optimizers.Adam(1e-3), loss)
    plain.fit(x[:640], y[:640], batch_size=32, verbose=0)
    dense = [l for l in tfc.core.find(plain, Q.QuantizeWrapper) if l.layer.name in zeros]
    assert all(np.mean(np.asarray(w.layer.kernel) == 0) < 0.5 for w in dense)  # from 0.8


class Scale(L.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), name="w")

    def call(self, x):
        return x * self.w


class ScaleConfig(Q.QuantizeConfig):
    def get_weights_and_quantizers(self, layer):
        return [(layer.w, Q.LastValueQuantizer(8, False, True, True))]

    def get_activations_and_quantizers(self, layer):
        return []

    def get_output_quantizers(self, layer):
        return [Q.MovingAverageQuantizer(8, False, False, False)]

    def get_config(self):
        return {}


def _with_custom():
    inputs = keras.Input((8,))
    x = L.Dense(8, activation="relu")(inputs)
    return inputs, x


def test_unsupported_layer_stays_float_with_a_warning_naming_it():
    inputs, x = _with_custom()
    model = keras.Model(inputs, L.Dense(2)(Scale(name="my_scale")(x)))
    with pytest.warns(UserWarning, match="my_scale"):
        Q.quantize_model(model)
    with pytest.raises(ValueError, match="quantize_annotate_layer"):
        Q.quantize_model(model, full_integer=True)


def test_custom_layer_with_quantize_config_is_int8():
    inputs, x = _with_custom()
    x = Q.quantize_annotate_layer(Scale(), quantize_config=ScaleConfig())(x)
    # unregistered custom classes: name them in the scope, as with TFMOT
    with Q.quantize_scope({"ScaleConfig": ScaleConfig, "Scale": Scale}):
        annotated = Q.quantize_annotate_model(keras.Model(inputs, L.Dense(2)(x)))
        qat = Q.quantize_apply(annotated)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(32, 8)).astype("float32")
    qat.compile("adam", "mse")
    qat.fit(data, rng.normal(size=(32, 2)), verbose=0)
    census = op_census(tflite_bytes(qat))
    assert float_compute(census) == []
    assert ("MUL", ["int8", "int8"], ["int8"]) in census


def test_bad_inputs_are_clear_errors():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        Q.quantize_model(Sub())
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    qat = Q.quantize_model(model)
    with pytest.raises(ValueError, match="already quantization-aware"):
        Q.quantize_model(qat)
    with pytest.raises(ValueError, match="num_bits"):
        Q.LastValueQuantizer(16, False, True, True)


def test_tfmot_quantization_names():
    k = tfmot.quantization.keras
    for name in ("quantize_model", "quantize_annotate_layer", "quantize_annotate_model",
                 "quantize_apply", "quantize_scope", "QuantizeConfig"):
        assert getattr(k, name) is getattr(Q, name)
    for name in ("LastValueQuantizer", "MovingAverageQuantizer", "AllValuesQuantizer"):
        assert getattr(k.quantizers, name) is getattr(Q, name)
    # TFMOT's positional name prefix
    model = keras.Sequential([keras.Input((4,)), L.Dense(8, name="hidden"), L.Dense(2)])
    assert "q_hidden" in [l.name for l in k.quantize_model(model, "q_").layers]
    annotated = k.quantize_annotate_model(model)
    plain = k.quantize_apply(annotated, Q.Default8BitQuantizeScheme(), "")
    assert "hidden" in [l.name for l in plain.layers]
    plain(np.ones((1, 4), "float32"))
    with pytest.raises(ValueError, match="quantized_layer_name_prefix"):
        k.quantize_model(model, 1)


def test_quantizers_match_numpy():
    import tensorflow as tf

    x = np.linspace(-3, 2, 50, dtype="float32").reshape(5, 10)
    layer = L.Layer()
    for quantizer, (low, high) in [
        (Q.LastValueQuantizer(8, False, True, True), (-3.0, 3.0)),
        (Q.MovingAverageQuantizer(8, False, False, False), (-3.0, 2.0)),
        (Q.AllValuesQuantizer(8, False, False, False), (-3.0, 2.0)),
    ]:
        weights = quantizer.build(x.shape, type(quantizer).__name__, layer)
        out = quantizer(tf.constant(x), True, weights).numpy()
        expected = tf.quantization.fake_quant_with_min_max_args(
            x, low, high, num_bits=8, narrow_range=quantizer.narrow_range).numpy()
        np.testing.assert_allclose(out, expected, atol=1e-6)
        assert float(np.asarray(weights["min"])) == pytest.approx(low)
        # inference uses the stored range
        np.testing.assert_allclose(quantizer(tf.constant(x), False, weights).numpy(), out, atol=1e-6)
    per_channel = Q.LastValueQuantizer(8, True, True, True)
    weights = per_channel.build(x.shape, "pc", layer)
    per_channel(tf.constant(x), True, weights)
    np.testing.assert_allclose(np.asarray(weights["max"]), np.abs(x).max(axis=0), rtol=1e-6)


def test_sequence_model_embedding_conv1d_pooling_is_int8():
    inp = keras.Input((12,), dtype="int32")
    x = L.Conv1D(16, 3, padding="same", activation="relu")(L.Embedding(50, 8)(inp))
    model = keras.Model(inp, L.Dense(1, activation="sigmoid")(L.GlobalAveragePooling1D()(x)))
    qat = Q.quantize_model(model)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (64, 12)).astype("int32")
    qat.compile("adam", "binary_crossentropy")
    qat.fit(x, rng.integers(0, 2, 64), epochs=1, verbose=0)
    content = tflite_bytes(qat)
    census = op_census(content)
    assert float_compute(census) == []
    assert ("GATHER", ["int8", "int32"], ["int8"]) in census
    np.testing.assert_allclose(run_tflite(content, x[:16]), qat.predict(x[:16], verbose=0),
                               atol=2 / 256)


def test_quantizer_gradient_is_straight_through_only():
    import tensorflow as tf

    x = tf.constant(np.linspace(-3, 2, 50, dtype="float32").reshape(5, 10))
    quantizer = Q.MovingAverageQuantizer(8, False, False, False)
    weights = quantizer.build(x.shape, "g", L.Layer())
    quantizer(x, True, weights)  # range [-3, 2]
    wide = 2.0 * x  # the moving average keeps the range near [-3, 2]: the tails get clipped
    with tf.GradientTape() as tape:
        tape.watch(wide)
        y = quantizer(wide, True, weights)
    grad = tape.gradient(y, wide).numpy()
    low, high = float(np.asarray(weights["min"])), float(np.asarray(weights["max"]))
    inside = (wide.numpy() >= low) & (wide.numpy() <= high)
    # straight-through: 1 inside the range, 0 outside, and nothing flows into
    # the range statistics (no gradient reaches the min/max elements through them)
    np.testing.assert_array_equal(grad, inside.astype("float32"))


def test_annotated_first_layer_gives_its_input_shape_to_sequential():
    # TFMOT's QAT comprehensive guide: `input_shape=` on the annotated first layer
    annotated = keras.Sequential([
        tfmot.quantization.keras.quantize_annotate_layer(L.Dense(20, input_shape=(20,))),
        L.Flatten()])
    qat = tfmot.quantization.keras.quantize_apply(annotated)
    assert qat.input_shape == (None, 20)
    assert qat(np.ones((1, 20), "float32")).shape == (1, 20)


def test_annotate_model_keeps_annotated_custom_layers_without_a_scope():
    # The guide annotates outside quantize_scope and applies inside it.
    annotated = Q.quantize_annotate_model(keras.Sequential([
        keras.Input((8,)), Q.quantize_annotate_layer(Scale(), quantize_config=ScaleConfig()),
        L.Dense(2)]))
    with Q.quantize_scope({"ScaleConfig": ScaleConfig, "Scale": Scale}):
        qat = Q.quantize_apply(annotated)
    scale = next(l for l in qat.layers if isinstance(l, Q.QuantizeWrapper)
                 and isinstance(l.layer, Scale))
    assert isinstance(scale.quantize_config, ScaleConfig)


def test_quantizers_accept_numpy_numbers_and_store_python_ones():
    quantizers = [
        Q.LastValueQuantizer(num_bits=np.int32(4), per_axis=np.bool_(False), symmetric=True,
                             narrow_range=False),
        Q.MovingAverageQuantizer(np.int64(8), False, False, False, ema_decay=np.float32(0.5)),
        Q.AllValuesQuantizer(np.uint8(8), False, False, False),
        Q.FixedRangeQuantizer(np.float32(-1.0), np.float64(1.0), num_bits=np.int16(8)),
    ]
    for q in quantizers:
        config = q.get_config()
        json.dumps(config)
        assert all(type(v) in (int, float, bool) for v in config.values()), config
        assert type(q).from_config(config) == q
    assert quantizers[0].get_config()["num_bits"] == 4
    with pytest.raises(ValueError, match="num_bits must be an integer"):
        Q.LastValueQuantizer(8.5, False, True, True)


def test_ranges_updated_inside_the_layer_call_are_kept():
    """The pre-activation range of a tanh layer is updated while the layer runs (inside
    the wrapper's weight-substitution scope): it must learn, not stay at its [-6, 6] start."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="tanh", name="d")])
    qat = Q.quantize_model(model)
    qat.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32") * 0.1
    qat.fit(x, np.zeros((64, 3)), batch_size=16, epochs=1, verbose=0)
    ranges = {v.name: float(np.asarray(v)) for v in qat.get_layer("quant_d").weights
              if "pre_activation" in v.name and v.name.endswith(("_min", "_max"))}
    assert len(ranges) == 2 and all(0 < abs(r) < 2 for r in ranges.values()), ranges
