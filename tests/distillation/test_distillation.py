"""tfcompress.distillation: losses vs numpy, the Distiller in real fits, bad inputs."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tfcompress import distillation as D
from tfcompress import examples

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- numpy references ------------------------------------------------------------------
def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _np_hinton(t, s, T):
    p, q = _softmax(t / T), _softmax(s / T)
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)) * T * T


def _np_bce(p_t, q_s):
    return np.mean(-(p_t * np.log(q_s) + (1 - p_t) * np.log(1 - q_s)))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _fixed(shape, seed):
    return np.random.default_rng(seed).normal(0, 2, shape).astype("float32")


# -- each loss vs numpy ------------------------------------------------------------------
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_logits_distillation_is_hinton_kl_times_t_squared(T):
    t, s = _fixed((6, 5), 1), _fixed((6, 5), 2)
    got = float(D.LogitsDistillation(T).compute_loss(t, s))
    assert got == pytest.approx(_np_hinton(t, s, T), rel=1e-5)
    # probabilities in: log-probabilities are used as logits, no double softmax
    probs = D.LogitsDistillation(T, from_logits=False).compute_loss(_softmax(t), _softmax(s))
    assert float(probs) == pytest.approx(_np_hinton(t, s, T), rel=1e-4)
    assert float(D.LogitsDistillation(T).compute_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_binary_distillation_is_cross_entropy_to_teacher_probabilities(T):
    zt, zs = _fixed((8, 1), 3), _fixed((8, 1), 4)
    expected = _np_bce(_sigmoid(zt / T), _sigmoid(zs / T)) * T * T
    got_logits = D.BinaryDistillation(T, from_logits=True).compute_loss(zt, zs)
    got_probs = D.BinaryDistillation(T).compute_loss(_sigmoid(zt), _sigmoid(zs))
    assert float(got_logits) == pytest.approx(expected, rel=1e-5)
    assert float(got_probs) == pytest.approx(expected, rel=1e-4)


def test_feature_distillation_mse_with_projection():
    t, s = _fixed((4, 3, 3, 6), 5), _fixed((4, 3, 3, 2), 6)
    loss = D.FeatureDistillation(teacher_layer_name="a", student_layer_name="b")
    projection = loss.build(t.shape, s.shape)
    w = _fixed((2, 6), 7)
    projection.set_weights([w])
    assert float(loss.compute_loss(t, s)) == pytest.approx(np.mean((t - s @ w) ** 2), rel=1e-5)
    same = D.FeatureDistillation("mae", projection="auto")
    assert same.build(t.shape, t.shape) is None
    s6 = _fixed(t.shape, 8)
    assert float(same.compute_loss(t, s6)) == pytest.approx(np.mean(np.abs(t - s6)), rel=1e-5)


def test_listwise_distillation_is_kl_over_each_list():
    t, s = _fixed((5, 20), 9), _fixed((5, 20), 10)
    loss = D.ListwiseDistillation(temperature=2.0)
    assert float(loss.compute_loss(t, s)) == pytest.approx(_np_hinton(t, s, 2.0), rel=1e-5)
    # (queries, list, 1) scores, and a constant shift per list changes nothing
    shifted = s[..., None] + np.arange(5, dtype="float32")[:, None, None]
    assert float(loss.compute_loss(t[..., None], shifted)) == pytest.approx(
        _np_hinton(t, s, 2.0), rel=1e-4)


@pytest.mark.parametrize("margin", [0.0, 1.5])
def test_pairwise_distillation_is_ranknet_on_teacher_ordered_pairs(margin):
    t, s = _fixed((3, 7), 11), _fixed((3, 7), 12)
    t[0, 1] = t[0, 2]  # a tie: not a pair
    total, count = 0.0, 0
    for q in range(3):
        for i in range(7):
            for j in range(7):
                if t[q, i] - t[q, j] > margin:
                    total += np.log1p(np.exp(-(s[q, i] - s[q, j])))
                    count += 1
    got = float(D.PairwiseDistillation(margin=margin).compute_loss(t, s))
    assert got == pytest.approx(total / count, rel=1e-5)


def test_losses_serialize_and_register():
    losses = [D.LogitsDistillation(2.5, from_logits=False, name="kd"), D.BinaryDistillation(3.0),
              D.FeatureDistillation("cosine_similarity", "a", "b", projection=False),
              D.ListwiseDistillation(1.5), D.PairwiseDistillation(margin=0.5)]
    t, s = _fixed((2, 4), 13), _fixed((2, 4), 14)
    for loss in losses:
        config = keras.saving.serialize_keras_object(loss)
        assert config["registered_name"].startswith("tfcompress>")
        back = keras.saving.deserialize_keras_object(config)
        assert type(back) is type(loss) and back.get_config() == loss.get_config()
        if not isinstance(loss, (D.FeatureDistillation, D.BinaryDistillation,
                                 D.LogitsDistillation)):
            assert float(back.compute_loss(t, s)) == float(loss.compute_loss(t, s))


# -- bad inputs -------------------------------------------------------------------------
def _mlp(inputs=6, hidden=8, outputs=3, name=None, activation=None):
    return keras.Sequential([keras.Input((inputs,)),
                             keras.layers.Dense(hidden, activation="relu", name="hidden"),
                             keras.layers.Dense(outputs, activation=activation, name="out")],
                            name=name)


@pytest.mark.parametrize("make, match", [
    (lambda: D.Distiller(_mlp(outputs=3), _mlp(outputs=4), D.LogitsDistillation()),
     r"outputs do not match: teacher \[\(None, 3\)\], student \[\(None, 4\)\]"),
    (lambda: D.LogitsDistillation(temperature=0), "temperature must be > 0"),
    (lambda: D.ListwiseDistillation(temperature=-1.0), "temperature must be > 0"),
    (lambda: D.BinaryDistillation(temperature=0.0), "temperature must be > 0"),
    (lambda: D.Distiller(keras.Sequential([keras.layers.Dense(3)]), _mlp(),
                         D.LogitsDistillation()), "teacher '.*' is not built"),
    (lambda: D.Distiller(_mlp(), _mlp(), D.FeatureDistillation(
        teacher_layer_name="nope", student_layer_name="hidden")),
     r"teacher model '.*' has no layer named 'nope'\. Its layers are: \['hidden', 'out'\]"),
    (lambda: D.Distiller(_mlp(), _mlp(), D.FeatureDistillation(
        teacher_layer_name="hidden", student_layer_name="nope")),
     "student model '.*' has no layer named 'nope'"),
    (lambda: D.Distiller(_mlp(), _mlp(), D.LogitsDistillation(), student_loss_weight=1.5),
     r"student_loss_weight must be a number in \[0, 1\]"),
    (lambda: D.Distiller(_mlp(), _mlp(), [D.LogitsDistillation()], [1.0, 2.0]),
     "has 2 entries but there are 1 distillation losses"),
    (lambda: D.Distiller([_mlp(), _mlp()], _mlp(), D.LogitsDistillation(), teacher_weights=[1]),
     "teacher_weights must be one number"),
    (lambda: D.Distiller(_mlp(activation="softmax"), _mlp(), D.LogitsDistillation()),
     "ends in a softmax activation.*Pass from_logits=False"),
    (lambda: D.Distiller(_mlp(), _mlp(), D.BinaryDistillation()),
     "ends in a linear layer.*Pass from_logits=True"),
    (lambda: D.Distiller(_mlp(hidden=8), _mlp(hidden=4), D.FeatureDistillation(
        teacher_layer_name="hidden", student_layer_name="hidden", projection=False)),
     "width 8 and student features 4, and projection=False"),
    (lambda: D.Distiller(tfc.pruning.prune_low_magnitude(_mlp()), _mlp(), D.LogitsDistillation()),
     "still carries tfcompress wrappers.*tfcompress.strip"),
    (lambda: D.Distiller(_mlp(), _mlp(), None), "distillation_losses is required"),
])
def test_bad_inputs_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_compile_without_label_loss_needs_pure_distillation():
    distiller = D.Distiller(_mlp(), _mlp(), D.LogitsDistillation())
    with pytest.raises(ValueError, match="student_loss_weight=0"):
        distiller.compile("adam")


def test_unlabelled_fit_with_metrics_scores_only_labelled_validation(digits):
    """fit(x) distils only; the compiled metrics score the labelled validation data."""
    from tfcompress import examples

    (x, y), (xv, yv), _ = digits
    keras.utils.set_random_seed(0)
    teacher = examples.digits_cnn(width=8)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=3, verbose=0)
    distiller = D.Distiller(teacher, examples.digits_cnn(width=8), D.LogitsDistillation(4.0))
    distiller.compile(keras.optimizers.Adam(3e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = distiller.fit(x, epochs=3, verbose=0, validation_data=(xv, yv)).history
    assert "accuracy" not in history and "student_loss" in history
    assert history["student_loss"] == [0.0, 0.0, 0.0]  # no labels, no label loss
    assert np.allclose(history["loss"], history["distillation_loss"])  # not scaled by 1 - w
    assert history["val_accuracy"][-1] > 0.6  # learned from the teacher alone
    assert history["val_student_loss"][-1] > 0


# -- the Distiller in real fits ------------------------------------------------------------
@keras.saving.register_keras_serializable("tfc_test")
class StepCounter(keras.layers.Layer):
    """Identity that counts the forward passes made in training mode."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x, training=None):
        if training:
            self.count.assign_add(1.0)
        return x


def _pruned_student(schedule):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = tfc.pruning.prune_low_magnitude(
        keras.layers.Dense(32, activation="relu", name="hidden"), pruning_schedule=schedule)(x)
    x = StepCounter(name="counter")(x)
    outputs = tfc.pruning.prune_low_magnitude(
        keras.layers.Dense(10, name="logits"), pruning_schedule=schedule)(x)
    return keras.Model(inputs, outputs, name="student")


def _scalar_tags(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])


def test_distilled_pruned_student_fits_strips_and_exports(digits, tmp_path):
    (x, y), (xv, yv), (xt, _) = digits
    teacher = examples.digits_cnn(width=8)  # BatchNorm inside: must stay in inference mode
    teacher.build((None, 8, 8, 1))
    teacher_before = [np.array(w) for w in teacher.weights]
    schedule = tfc.pruning.ConstantSparsity(0.8, begin_step=0, frequency=5)
    student = _pruned_student(schedule)
    hint = D.FeatureDistillation(teacher_layer_name=teacher.layers[-2].name,
                                 student_layer_name="hidden")  # 64 vs 32: projected
    distiller = D.Distiller(teacher, student, [D.LogitsDistillation(4.0), hint],
                            distillation_loss_weights=[1.0, 0.1], student_loss_weight=0.3)
    assert hint.projection_layer is not None
    projection_before = np.array(hint.projection_layer.kernel)
    assert len(distiller.trainable_weights) == len(student.trainable_weights) + 1
    distiller.compile(keras.optimizers.Adam(3e-3), CE, metrics=["accuracy"])
    history = distiller.fit(
        x, y, batch_size=64, epochs=2, validation_data=(xv, yv), verbose=0,
        callbacks=[tfc.pruning.UpdatePruningStep(),
                   keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))])

    logs = history.history
    for key in ("loss", "accuracy", "student_loss", "distillation_loss", "total_loss",
                "distillation_loss_logits", "distillation_loss_feature_hidden"):
        assert key in logs and "val_" + key in logs, key
        assert len(logs[key]) == 2 and np.all(np.isfinite(logs[key]))
    assert logs["distillation_loss_logits"][1] < logs["distillation_loss_logits"][0]
    np.testing.assert_allclose(logs["total_loss"], logs["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        logs["distillation_loss"],
        np.add(logs["distillation_loss_logits"], np.multiply(0.1, logs["distillation_loss_feature_hidden"])),
        rtol=1e-4)

    tags = _scalar_tags(tmp_path / "tb" / "train")
    assert {"epoch_distillation_loss_logits", "epoch_distillation_loss_feature_hidden",
            "epoch_student_loss", "epoch_total_loss"} <= tags

    steps = int(distiller.optimizer.iterations)
    assert steps == 2 * int(np.ceil(len(x) / 64))
    # teacher frozen and in inference mode: not one weight (BN statistics included) moved
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, np.array(after))
    # the student ran once per step, in training mode, features included
    assert float(student.get_layer("counter").count) == steps
    assert not np.allclose(projection_before, np.array(hint.projection_layer.kernel))
    assert tfc.pruning.sparsity_logs(student)["global_sparsity"] == pytest.approx(0.8, abs=0.01)

    stripped = tfc.pruning.strip_pruning(distiller.student)
    assert not tfc.core.find(stripped, tfc.core.WeightWrapper)
    kernel = np.array(stripped.get_layer("hidden").kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.8, abs=0.01)
    expected = np.array(stripped(xt[:16], training=False))
    np.testing.assert_allclose(np.array(distiller.predict(xt[:16], verbose=0)), expected,
                               atol=1e-5)

    saved = str(tmp_path / "saved")
    stripped.export(saved, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(saved)  # keep a reference: it owns the variables
    np.testing.assert_allclose(np.array(reloaded.serve(xt[:16])), expected, atol=1e-5)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    content = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.resize_tensor_input(it.get_input_details()[0]["index"], (16, 8, 8, 1))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], xt[:16])
    it.invoke()
    lite = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.mean(lite.argmax(-1) == expected.argmax(-1)) >= 0.9


def test_student_with_pruning_and_qat_wrappers_distils_in_one_fit_and_exports_int8(digits):
    (x, y), _, (xt, _) = digits
    teacher = examples.digits_cnn(width=8)
    teacher.build((None, 8, 8, 1))
    base_student = examples.digits_cnn(width=4)
    hidden = base_student.layers[-2].name  # the Dense(64), found through both wrappers
    pruned = tfc.pruning.prune_low_magnitude(
        base_student, pruning_schedule=tfc.pruning.ConstantSparsity(0.8, 0, frequency=5))
    student = tfc.quantization.quantize_model(
        pruned, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
    distiller = D.Distiller(teacher, student, [
        D.LogitsDistillation(4.0),
        D.FeatureDistillation(teacher_layer_name=teacher.layers[-2].name,
                              student_layer_name=hidden)], student_loss_weight=0.3)
    distiller.compile(keras.optimizers.Adam(3e-3), CE)
    logs = distiller.fit(x, y, batch_size=64, epochs=1, verbose=0,
                         callbacks=[tfc.pruning.UpdatePruningStep()]).history
    assert np.isfinite(logs[f"distillation_loss_feature_{hidden}"][0])
    assert tfc.pruning.sparsity_logs(student)["global_sparsity"] == pytest.approx(0.8, abs=0.01)
    final = tfc.pruning.strip_pruning(distiller.student)
    content = tfc.export.to_tflite(final, mode="int8")
    report = tfc.export.verify(content, final, xt[:64], latency_runs=1)
    assert report.agreement >= 0.95


def test_loss_formula_with_weighted_teachers_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    t1, t2 = _mlp(name="t_small"), _mlp(hidden=16, name="t_big")
    student = _mlp(hidden=4, name="s")
    distiller = D.Distiller([t1, t2], student, D.LogitsDistillation(2.0),
                            distillation_loss_weights=[0.5], student_loss_weight=0.25,
                            teacher_weights=[1.0, 3.0])
    distiller.compile("adam", CE)
    got = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)

    zs = np.array(student(x))
    kl1, kl2 = _np_hinton(np.array(t1(x)), zs, 2.0), _np_hinton(np.array(t2(x)), zs, 2.0)
    ce = np.mean(-np.log(_softmax(zs)[np.arange(32), y]))
    logits_term = 0.25 * kl1 + 0.75 * kl2
    assert got["distillation_loss_logits_t_small"] == pytest.approx(kl1, rel=1e-4)
    assert got["distillation_loss_logits_t_big"] == pytest.approx(kl2, rel=1e-4)
    assert got["distillation_loss_logits"] == pytest.approx(logits_term, rel=1e-4)
    assert got["distillation_loss"] == pytest.approx(0.5 * logits_term, rel=1e-4)
    assert got["student_loss"] == pytest.approx(ce, rel=1e-4)
    assert got["loss"] == pytest.approx(0.25 * ce + 0.75 * 0.5 * logits_term, rel=1e-4)


def test_same_loss_as_keras_distiller_when_keras_kl_is_set_up_right():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    teacher, student = _mlp(hidden=16), _mlp(hidden=4)
    ours = D.Distiller(teacher, student, D.LogitsDistillation(3.0), student_loss_weight=0.3)
    theirs = keras.distillation.Distiller(
        teacher, student, keras.distillation.LogitsDistillation(3.0, loss=keras.losses.KLDivergence()),
        student_loss_weight=0.3)
    # and our loss works inside keras' Distiller (it subclasses keras' DistillationLoss)
    keras_with_ours = keras.distillation.Distiller(teacher, student, D.LogitsDistillation(3.0),
                                                   student_loss_weight=0.3)
    for d in (ours, theirs, keras_with_ours):
        d.compile("adam", CE)
    a = ours.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    for other in (theirs, keras_with_ours):
        b = other.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["distillation_loss"] == pytest.approx(b["distillation_loss"], rel=1e-4)


def test_keras_losses_accepted_and_keras_kl_pitfall_warned():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64).astype("int32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right set-up warns about nothing
        distiller = D.Distiller(_mlp(), _mlp(), [
            keras.distillation.LogitsDistillation(2.0, loss=keras.losses.KLDivergence()),
            keras.distillation.FeatureDistillation("mse", "hidden", "hidden")])
    distiller.compile("adam", CE)
    logs = distiller.fit(x, y, epochs=1, verbose=0).history
    assert {"distillation_loss_logits", "distillation_loss_feature"} <= set(logs)
    with pytest.warns(UserWarning, match="no softmax is applied.*no T\\*\\*2 factor"):
        D.Distiller(_mlp(), _mlp(), keras.distillation.LogitsDistillation(2.0))


def test_click_and_ranking_students_learn_from_the_teacher_alone():
    # click-through: sigmoid outputs, no labels at all (pure distillation)
    features, _ = examples.click_logs(n=2048)
    teacher = examples.click_model(dim=16)
    student = examples.click_model(dim=4)
    distiller = D.Distiller(teacher, student, D.BinaryDistillation(), student_loss_weight=0.0)
    distiller.compile(keras.optimizers.Adam(1e-2))
    logs = distiller.fit(features, batch_size=256, epochs=3, verbose=0).history
    assert logs["distillation_loss_binary"][-1] < logs["distillation_loss_binary"][0]
    assert logs["student_loss"] == [0.0, 0.0, 0.0]

    # ranking: 16 queries x 10 candidates x 5 features, scores (queries, list)
    def ranker(width, name):
        inputs = keras.Input((10, 5))
        h = keras.layers.Dense(width, activation="relu")(inputs)
        scores = keras.layers.Reshape((10,))(keras.layers.Dense(1)(h))
        return keras.Model(inputs, scores, name=name)

    x = np.random.default_rng(3).normal(size=(64, 10, 5)).astype("float32")
    distiller = D.Distiller(ranker(32, "teacher"), ranker(4, "student"),
                            [D.ListwiseDistillation(), D.PairwiseDistillation()],
                            student_loss_weight=0.0)
    distiller.compile(keras.optimizers.Adam(1e-2))
    logs = distiller.fit(x, batch_size=16, epochs=5, verbose=0).history
    for key in ("distillation_loss_listwise", "distillation_loss_pairwise"):
        assert logs[key][-1] < logs[key][0], (key, logs[key])


def test_distiller_round_trips_through_a_keras_file(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64).astype("int32")
    distiller = D.Distiller([_mlp(hidden=16, name="t1"), _mlp(name="t2")], _mlp(hidden=4), [
        D.LogitsDistillation(2.0),
        D.FeatureDistillation(teacher_layer_name="hidden", student_layer_name="hidden")],
        distillation_loss_weights=[1.0, 0.5], student_loss_weight=0.4, teacher_weights=[2, 1])
    distiller.compile(keras.optimizers.Adam(1e-2), CE)
    distiller.fit(x, y, epochs=2, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # compiled back without warnings
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded, D.Distiller) and loaded.teacher_weights == distiller.teacher_weights
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    for key in ("loss", "distillation_loss_logits_t1", "distillation_loss_feature_hidden_t2"):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key
