"""Structured pruning: whole channels pruned in fit, coupled by the graph, then shrunk away."""

import os

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples

L = keras.layers


def _fit(model, x, y, loss, fraction=0.5, criterion="l2", steps=4, optimizer="adam",
         **kwargs):
    schedule = tfc.pruning.ConstantSparsity(fraction, 0, frequency=1)
    pruned = tfc.pruning.prune_filters(model, pruning_schedule=schedule, criterion=criterion,
                                       **kwargs)
    pruned.compile(optimizer, loss)
    pruned.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=steps, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    return pruned


def _first(x, n=32):
    return {k: v[:n] for k, v in x.items()} if isinstance(x, dict) else x[:n]


def _check_shrinks(model, x, y, loss, ratio=0.75, **kwargs):
    """Prunes half of every group, shrinks, and checks outputs and parameters."""
    before = model.predict(_first(x), verbose=0)
    pruned = _fit(model, x, y, loss, **kwargs)
    small = tfc.pruning.shrink(pruned)
    assert not tfc.core.find(small, tfc.core.WeightWrapper)
    masked = pruned.predict(_first(x), verbose=0)
    shrunk = small.predict(_first(x), verbose=0)
    np.testing.assert_allclose(shrunk, masked, atol=1e-4, rtol=0)
    assert np.max(np.abs(np.asarray(masked) - np.asarray(before))) > 1e-3  # pruning did act
    assert small.count_params() < ratio * model.count_params()
    return pruned, small


def test_conv_chain_shrinks_to_half_the_filters(digits):
    (x, y), _, _ = digits
    model = examples.digits_cnn()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned, small = _check_shrinks(model, x, y, loss)
    convs = [layer for layer in small.layers if isinstance(layer, L.Conv2D)
             and not isinstance(layer, L.DepthwiseConv2D)]
    assert [c.filters for c in convs] == [8, 16, 16]
    assert small.get_layer("dense").units == 32 and small.get_layer("logits").units == 10
    # the Flatten into Dense: 4x4 positions x 16 kept channels
    assert small.get_layer("dense").kernel.shape == (16 * 16, 32)
    for wrapper in tfc.core.find(pruned, tfc.pruning.PruneFilters):
        assert all(kept == size // 2 for (group, size), kept in zip(
            wrapper.groups.items(), wrapper.kept_channels().values()))


def _residual_model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    stem = L.ReLU()(x)
    branch = L.Conv2D(8, 3, padding="same", name="inner")(stem)
    branch = L.ReLU()(branch)
    branch = L.Conv2D(16, 3, padding="same", name="back")(branch)
    branch = L.BatchNormalization(name="back_bn")(branch)
    x = L.ReLU()(L.Add()([stem, branch]))
    x = L.Conv2D(12, 1, name="after")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10, name="head")(x))


def test_residual_add_couples_every_branch(digits):
    (x, y), _, _ = digits
    model = _residual_model()
    groups = tfc.core.channels.channel_groups(model)
    residual = groups["stem"]
    assert {u.layer.name for u in residual.producers} == {"stem", "back"}
    assert {u.layer.name for u in residual.uses if u.role == "in"} == {"inner", "after"}
    pruned, small = _check_shrinks(model, x, y, "sparse_categorical_crossentropy")
    copies = [np.asarray(w.channel_masks["stem"]) for w in
              tfc.core.find(pruned, tfc.pruning.PruneFilters) if "stem" in w.channel_masks]
    assert len(copies) == 6  # stem, stem_bn, inner, back, back_bn, after
    assert all(np.array_equal(copies[0], c) for c in copies)
    assert small.get_layer("stem").filters == small.get_layer("back").filters == 8
    assert small.get_layer("stem_bn").gamma.shape == (8,)
    assert small.get_layer("inner").filters == 4 and small.get_layer("after").filters == 6


def test_concatenate_offsets_and_depthwise_separable(digits):
    (x, y), _, _ = digits
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(12, 3, padding="same", name="b")(inputs)
    x_ = L.Concatenate()([a, b])
    x_ = L.DepthwiseConv2D(3, padding="same", name="dw")(x_)
    x_ = L.BatchNormalization(name="bn")(x_)
    x_ = L.SeparableConv2D(16, 3, padding="same", name="sep")(x_)
    x_ = L.GlobalMaxPooling2D()(x_)
    model = keras.Model(inputs, L.Dense(10, name="head")(x_))
    pruned, small = _check_shrinks(model, x, y, "sparse_categorical_crossentropy", ratio=0.8)
    assert small.get_layer("a").filters == 4 and small.get_layer("b").filters == 6
    assert small.get_layer("dw").kernel.shape == (3, 3, 10, 1)
    assert small.get_layer("sep").depthwise_kernel.shape == (3, 3, 10, 1)
    assert small.get_layer("sep").pointwise_kernel.shape == (1, 1, 10, 8)
    # the kept rows of the separable conv are a's kept channels, then b's, at b's offset
    wrappers = {w.layer.name: w for w in tfc.core.find(pruned, tfc.pruning.PruneFilters)}
    kept_a = np.flatnonzero(np.asarray(wrappers["a"].channel_masks["a"]))
    kept_b = np.flatnonzero(np.asarray(wrappers["b"].channel_masks["b"]))
    dense_rows = tfc.strip(pruned).get_layer("sep").pointwise_kernel.numpy()[0, 0]
    np.testing.assert_array_equal(small.get_layer("sep").pointwise_kernel.numpy()[0, 0],
                                  dense_rows[np.concatenate([kept_a, 8 + kept_b])][:, np.flatnonzero(
                                      np.asarray(wrappers["sep"].channel_masks["sep"]))])


def test_click_model_towers_and_embedding_columns(click):
    features, clicks = examples.click_logs(n=512)
    model = examples.click_model()
    pruned, small = _check_shrinks(model, features, clicks, "binary_crossentropy")
    # user and item vectors are multiplied together: their columns are one group
    assert small.get_layer("user_embedding").output_dim == 8
    assert small.get_layer("item_embedding").output_dim == 8
    towers = sorted(layer.units for layer in small.layers if isinstance(layer, L.Dense))
    assert towers == [1, 1, 16, 32]  # the tower's 64 → 32 and 32 → 16; interaction and logit


def test_attention_heads_are_removed_whole():
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 16))
    h = L.MultiHeadAttention(4, 8, name="attention")(inputs, inputs)
    h = L.LayerNormalization()(L.Add()([inputs, h]))
    model = keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h)))
    x = rng.normal(size=(64, 8, 16)).astype("float32")
    y = rng.integers(0, 3, 64)
    pruned, small = _check_shrinks(model, x, y, "sparse_categorical_crossentropy",
                                   layers=["attention/heads"])
    attention = small.get_layer("attention")
    assert attention.num_heads == 2 and attention._key_dim == 8
    assert attention._query_dense.kernel.shape == (16, 2, 8)


def test_keras_hub_bert_heads_and_feed_forward_units(tmp_path):
    model, x, y = examples.bert_classifier()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned, small = _check_shrinks(model, x, y, loss, ratio=0.7)  # embeddings stay
    for name in ("transformer_layer_0", "transformer_layer_1"):
        encoder = small.get_layer("bert_backbone").get_layer(name)
        assert encoder.intermediate_dim == 16 and encoder.num_heads == 1
        assert encoder._feedforward_intermediate_dense.kernel.shape == (16, 16)
        # the kept head keeps its size (8), where keras-hub would make it hidden_dim // 1
        assert encoder._self_attention_layer._query_dense.kernel.shape == (16, 1, 8)
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    first = {k: v[:8] for k, v in x.items()}
    np.testing.assert_allclose(keras.saving.load_model(path).predict(first, verbose=0),
                               small.predict(first, verbose=0), atol=1e-6)
    report = tfc.pruning.channel_report(model)
    fixed = report[~report.prunable]
    assert any("PositionEmbedding" in reason for reason in fixed.reason)


@pytest.mark.slow
@pytest.mark.parametrize("application", ["ResNet50", "MobileNetV2", "EfficientNetB0"])
def test_keras_applications_shrink(application, digits):
    (x, y), _, _ = digits
    images = np.repeat(np.repeat(np.repeat(x[:32], 4, 1), 4, 2), 3, -1)
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, application)(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned, small = _check_shrinks(model, images, y[:32], loss, steps=1)
    assert small.count_params() < 0.4 * model.count_params()


def test_criteria_pick_the_expected_channels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")

    def model():
        inputs = keras.Input((4,))
        h = L.Dense(8, name="hidden")(inputs)
        h = L.BatchNormalization(name="bn")(h)
        out = L.Dense(2, name="out")(h)
        m = keras.Model(inputs, out)
        kernel = np.ones((4, 8), "float32") * np.arange(1, 9, dtype="float32")  # l2 grows
        m.get_layer("hidden").kernel.assign(kernel)
        m.get_layer("bn").gamma.assign(np.arange(8, 0, -1).astype("float32"))  # shrinks
        head = rng.normal(size=(8, 2)).astype("float32")
        head[[1, 3, 5, 7]] = 0.0  # units whose gradient is zero: no Taylor importance
        m.get_layer("out").kernel.assign(head)
        return m

    def kept(criterion, begin=0):
        schedule = tfc.pruning.ConstantSparsity(0.5, begin, frequency=1)
        pruned = tfc.pruning.prune_filters(model(), pruning_schedule=schedule,
                                           criterion=criterion, layers=["hidden"])
        pruned.compile(keras.optimizers.SGD(0.0), "mse")
        pruned.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=begin + 1, verbose=0,
                   callbacks=[tfc.pruning.UpdatePruningStep()])
        wrapper = tfc.core.find(pruned, tfc.pruning.PruneFilters)[0]
        return list(np.flatnonzero(np.asarray(wrapper.channel_masks["hidden"])))

    assert kept("l2") == kept("l1") == [4, 5, 6, 7]
    assert kept("bn_gamma") == [0, 1, 2, 3]
    assert kept("taylor", begin=3) == [0, 2, 4, 6]


def test_save_resume_and_masks_only_shrink(tmp_path, digits):
    (x, y), _, _ = digits
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    pruned = tfc.pruning.prune_filters(examples.digits_cnn(), pruning_schedule=schedule)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, steps_per_epoch=4, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:16], verbose=0),
                               pruned.predict(x[:16], verbose=0), atol=1e-6)
    before = {w.layer.name: {g: np.asarray(m) for g, m in w.channel_masks.items()}
              for w in tfc.core.find(loaded, tfc.pruning.PruneFilters)}
    loaded.fit(x, y, batch_size=16, steps_per_epoch=6, epochs=1, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    for wrapper in tfc.core.find(loaded, tfc.pruning.PruneFilters):
        assert int(np.asarray(wrapper.pruning_step)) == 10
        for group, mask in wrapper.channel_masks.items():
            now, then = np.asarray(mask), before[wrapper.layer.name][group]
            assert np.all(now <= then) and now.mean() == 0.25  # 75 % reached, never revived
    small = tfc.shrink(loaded)
    assert small.get_layer("dense").units == 16


def test_bad_input_names_the_problem():
    model = examples.digits_cnn()
    with pytest.raises(ValueError, match="a model output"):
        tfc.pruning.prune_filters(model, layers=["logits"])
    with pytest.raises(ValueError, match="no layer or channel group named 'conv'"):
        tfc.pruning.prune_filters(model, layers=["conv"])
    with pytest.raises(ValueError, match="criterion must be one of"):
        tfc.pruning.prune_filters(model, criterion="l3")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="Sequential or functional"):
        tfc.pruning.prune_filters(Sub())
    qat = tfc.quantization.quantize_model(examples.digits_cnn())
    with pytest.raises(ValueError, match="shrink the float model first"):
        tfc.shrink(qat)
    pruned = tfc.pruning.prune_filters(model)
    pruned.compile("adam", "mse")
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        pruned.fit(np.zeros((4, 8, 8, 1)), np.zeros((4, 10)), verbose=0)


def test_shrink_then_qat_to_int8_tflite(digits):
    (x, y), _, (x_test, y_test) = digits
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    dense = examples.digits_cnn()
    dense.compile("adam", loss, metrics=["accuracy"])
    dense.fit(x, y, batch_size=32, epochs=3, verbose=0)
    pruned = _fit(dense, x, y, loss, steps=40)
    small = tfc.shrink(pruned)
    qat = tfc.quantization.quantize_model(small)
    qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    qat.fit(x, y, batch_size=32, epochs=2, verbose=0)
    content = tfc.export.to_tflite(qat, mode="int8", representative_data=x[:64])
    from tests.helpers import run_tflite

    logits = run_tflite(content, x_test)
    accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
    assert accuracy > 0.85, accuracy
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    kernels = [d for d in interpreter.get_tensor_details()
               if len(d["shape"]) == 4 and d["dtype"] == np.int8 and d["shape"][0] == 16]
    assert kernels  # the 1x1 conv of 16 (not 32) filters, int8


def test_distillation_and_structured_pruning_in_one_fit(digits):
    (x, y), _, _ = digits
    teacher = examples.digits_cnn()
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, batch_size=32, epochs=1, verbose=0)
    student = tfc.pruning.prune_filters(
        teacher, pruning_schedule=tfc.pruning.PolynomialDecay(0.0, 0.5, 0, 20, frequency=5))
    distiller = tfc.distillation.Distiller(teacher=teacher, student=student,
                                           distillation_losses=tfc.distillation.LogitsDistillation())
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=25, verbose=0,
                  callbacks=[tfc.pruning.UpdatePruningStep()])
    small = tfc.shrink(distiller.student)
    assert small.get_layer("dense").units == 32
    np.testing.assert_allclose(small.predict(x[:16], verbose=0),
                               student.predict(x[:16], verbose=0), atol=1e-4)


def test_tensorboard_logs_channels_removed(tmp_path, digits):
    from tensorboard.backend.event_processing import event_accumulator

    (x, y), _, _ = digits
    pruned = tfc.pruning.prune_filters(
        examples.digits_cnn(), pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=3, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep(),
                          tfc.CompressionSummaries(log_dir=str(tmp_path))])
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "structured_pruning"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    assert "structured_pruning/removed/dense" in tags
    last = events.Tensors("structured_pruning/removed/dense")[-1]
    assert float(np.asarray(keras.ops.convert_to_numpy(
        __import__("tensorflow").make_ndarray(last.tensor_proto)))) == 0.5


def test_recipe_stage_shrinks_before_qat(tmp_path, digits):
    (x, y), (x_val, y_val), _ = digits
    model = examples.digits_cnn()
    result = tfc.recipe.run(
        model, {"prune_filters": {"fraction": 0.5, "epochs": 1}, "quantize": {"epochs": 1}},
        {"x": x[:256], "y": y[:256], "x_val": x_val[:64], "y_val": y_val[:64]},
        out_dir=str(tmp_path))
    small = keras.saving.load_model(os.path.join(tmp_path, "model_float.keras"))
    assert small.get_layer("dense").units == 32
    assert small.count_params() < 0.5 * model.count_params()
    del result


def _mlp():
    return keras.Sequential([keras.Input((16,)), L.Dense(32, activation="relu", name="a"),
                             L.Dense(16, activation="relu", name="b"), L.Dense(4, name="c")])


@pytest.mark.parametrize("steps_per_execution,jit_compile", [(8, True), (3, False)])
def test_fit_modes_reach_the_schedule_exactly(steps_per_execution, jit_compile):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = x @ rng.normal(size=(16, 4)).astype("float32")
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=24, frequency=4)
    model = tfc.pruning.prune_filters(_mlp(), pruning_schedule=schedule)
    model.compile("adam", "mse", steps_per_execution=steps_per_execution,
                  jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    assert tfc.pruning.callbacks.channel_logs(model) == {"a": 0.75, "b": 0.75}
    for wrapper in tfc.core.find(model, tfc.pruning.PruneFilters):
        assert int(np.asarray(wrapper.pruning_step)) == 32
    small = tfc.shrink(model)
    assert isinstance(small, keras.Sequential)
    assert [layer.units for layer in small.layers] == [8, 4, 4]


MIRRORED = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import tfcompress as tfc

keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
schedule = tfc.pruning.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=16, frequency=4)
with strategy.scope():
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    model = tfc.pruning.prune_filters(base, pruning_schedule=schedule, criterion="l1")
    model.compile("adam", "mse")
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 16)).astype("float32")
y = x @ rng.normal(size=(16, 4)).astype("float32")
model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
masks = {}
for wrapper in tfc.core.find(model, tfc.pruning.PruneFilters):
    for group, mask in wrapper.channel_masks.items():
        masks.setdefault(group, []).extend(np.asarray(r.numpy()).tolist()
                                           for r in mask.value.values)
print("RESULT" + json.dumps(masks))
"""


def test_mirrored_strategy_gives_one_mask_per_group_on_every_replica():
    import json
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    masks = json.loads(line[len("RESULT"):])
    assert len(masks) == 2
    for copies in masks.values():
        assert len(copies) == 4  # two wrappers (maker and reader) x two replicas
        assert all(c == copies[0] for c in copies) and np.mean(copies[0]) == 0.5


def test_nested_model_and_softmax_producer(digits):
    (x, y), _, _ = digits
    tower = keras.Sequential([keras.Input((64,)), L.Dense(32, activation="relu", name="t1"),
                              L.Dense(16, activation="softmax", name="gate")], name="tower")
    inputs = keras.Input((8, 8, 1))
    h = L.Flatten()(L.Conv2D(4, 1, name="c")(inputs))
    h = L.Dense(64, activation="relu", name="d")(h[:, :64])  # a keras.ops slice
    model = keras.Model(inputs, L.Dense(10, name="head")(tower(h)))
    groups = tfc.core.channels.channel_groups(model)
    assert "softmax" in groups["gate"].reason and "keras.ops" in groups["c"].reason
    pruned, small = _check_shrinks(model, x, y, "sparse_categorical_crossentropy", ratio=0.8)
    assert small.get_layer("tower").get_layer("t1").units == 16
    assert small.get_layer("tower").get_layer("gate").units == 16
    assert small.get_layer("d").units == 32
