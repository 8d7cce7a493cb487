"""Weight clustering: TFMOT's names and semantics on Keras 3, trained in `fit`, stripped,
saved, resumed, composed with pruning and QAT, exported to int8 TFLite and read back."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
import tfcompress as tfmot
from helpers import interpreter, regression_data, tflite_bytes
from tfcompress import examples

C = tfc.clustering
INIT = C.CentroidInitialization
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _trained_cnn(epochs=3, seed=0):
    keras.utils.set_random_seed(seed)
    (x, y), _, (xt, yt) = examples.digits()
    model = examples.digits_cnn(width=8)
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model, (x, y), (xt, yt)


@pytest.fixture(scope="module")
def cnn():
    return _trained_cnn()


def _fit(model, x, y, epochs=1, lr=1e-3):
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def _kernels(model):
    """The clusterable kernels (a DepthwiseConv2D's is left as it is, as in TFMOT)."""
    return {w.path: np.asarray(w) for layer in model._flatten_layers(include_self=False)
            if not isinstance(layer, keras.layers.DepthwiseConv2D)
            for w in layer.weights if w.name in ("kernel", "embeddings", "pointwise_kernel")}


@pytest.mark.parametrize("init", list(INIT))
def test_every_init_trains_in_fit_and_strips_to_at_most_k_values(cnn, init):
    model, (x, y), (xt, yt) = cnn
    clustered = tfmot.clustering.keras.cluster_weights(
        model, number_of_clusters=8, cluster_centroids_init=init)
    start = [np.asarray(c) for w in tfc.core.find(clustered, C.ClusterWeights)
             for c, _ in w.centroids]
    _fit(clustered, x[:640], y[:640])
    moved = [np.asarray(c) for w in tfc.core.find(clustered, C.ClusterWeights)
             for c, _ in w.centroids]
    assert any(not np.allclose(a, b) for a, b in zip(start, moved))  # centroids train
    plain = tfmot.clustering.keras.strip_clustering(clustered)
    assert not tfc.core.find(plain, C.ClusterWeights)
    kernels = _kernels(plain)
    assert len(kernels) == 5 and all(np.unique(k).size <= 8 for k in kernels.values())
    np.testing.assert_allclose(plain.predict(xt, verbose=0), clustered.predict(xt, verbose=0),
                               atol=1e-5)
    assert _accuracy(plain, xt, yt) > _accuracy(model, xt, yt) - 0.05


def test_kmeans_plus_plus_is_tfmots_greedy_seeding_or_refined_by_lloyd():
    # Seeding picks centroids among the values (Lloyd iterations move them to means),
    # and the greedy choice puts one centroid on each of four far-apart clumps.
    from tfcompress.clustering import centroids

    rng = np.random.default_rng(0)
    clumps = np.concatenate([c + 0.01 * rng.normal(size=250) for c in (-3.0, -1.0, 0.5, 4.0)])
    found = centroids.initial(clumps, 4, INIT.KMEANS_PLUS_PLUS)
    assert np.all(np.isin(found, clumps.astype(np.float32)))
    assert np.allclose(found, [-3.0, -1.0, 0.5, 4.0], atol=0.05)
    assert np.array_equal(found, centroids.initial(clumps, 4, INIT.KMEANS_PLUS_PLUS))  # seeded
    # refined (per channel, preserve_sparsity): Lloyd moves each to its clump's mean
    refined = centroids.initial(clumps, 4, INIT.KMEANS_PLUS_PLUS, refine=True)
    np.testing.assert_allclose(refined, np.sort(clumps.reshape(4, 250).mean(axis=1)), rtol=1e-5)


def test_per_channel_clustering_limits_each_conv_channel(cnn):
    model, (x, y), _ = cnn
    clustered = C.cluster_weights(model, 4, cluster_per_channel=True,
                                  cluster_gradient_aggregation=C.GradientAggregation.AVG)
    _fit(clustered, x[:320], y[:320])
    plain = tfc.strip(clustered)
    convs = [l for l in plain.layers if isinstance(l, keras.layers.Conv2D)]
    for conv in convs:
        kernel = np.asarray(conv.kernel)
        assert max(np.unique(kernel[..., c]).size for c in range(kernel.shape[-1])) <= 4
        assert np.unique(kernel).size > 4  # each channel its own centroids
    # the hidden Dense (found by type: the module fixture's names follow whatever the worker
    # built before, e.g. "dense_5")
    (hidden,) = [l for l in plain.layers if type(l) is keras.layers.Dense and l.name != "logits"]
    assert np.unique(np.asarray(hidden.kernel)).size <= 4  # Dense: global


def test_gradients_reach_centroids_summed_or_averaged():
    layer = keras.layers.Dense(1, use_bias=False)
    layer.build((None, 4))
    layer.kernel.assign(np.array([[-1.0], [-0.9], [1.0], [1.1]], "float32"))
    grads = {}
    for aggregation in C.GradientAggregation:
        wrapper = C.ClusterWeights(layer, 2, INIT.LINEAR, cluster_gradient_aggregation=aggregation)
        import tensorflow as tf
        x = tf.ones((1, 4))
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(wrapper(x, training=True))
        (variable, _), = wrapper.centroids
        grads[aggregation] = tape.gradient(y, [variable, layer.kernel])
    sum_grad, kernel_grad = grads[C.GradientAggregation.SUM]
    np.testing.assert_allclose(np.asarray(sum_grad), [2.0, 2.0])  # two weights per centroid
    np.testing.assert_allclose(np.asarray(kernel_grad), np.ones((4, 1)))  # straight through
    np.testing.assert_allclose(np.asarray(grads[C.GradientAggregation.AVG][0]), [1.0, 1.0])


@pytest.mark.parametrize("aggregation", list(C.GradientAggregation))
def test_trains_under_xla_with_steps_per_execution(aggregation):
    x, y = regression_data(n=128)
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(4)])
    model = C.cluster_weights(base, 4, cluster_gradient_aggregation=aggregation)
    model.compile("adam", "mse", jit_compile=True, steps_per_execution=4)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    assert max(C.unique_values(tfc.strip(model)).values()) <= 4


def test_sparsity_preserving_clustering_of_a_pruned_model_keeps_its_zeros(cnn):
    """TFMOT's sparse clustering flow: prune, strip, cluster with preserve_sparsity."""
    model, (x, y), (xt, yt) = cnn
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1))
    pruned.compile(keras.optimizers.Adam(1e-3), LOSS)
    pruned.fit(x[:320], y[:320], verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    zeros = {p: k == 0 for p, k in _kernels(stripped).items()}
    clustered = tfmot.clustering.keras.experimental.cluster_weights(
        stripped, number_of_clusters=8, preserve_sparsity=True)
    _fit(clustered, x, y)
    plain = tfc.strip(clustered)
    for path, kernel in _kernels(plain).items():
        assert np.all(kernel[zeros[path]] == 0), path
        assert np.unique(kernel).size <= 8 and np.mean(kernel == 0) >= 0.5 - 1e-3
    assert _accuracy(plain, xt, yt) > 0.8


def test_pruned_and_clustered_in_one_fit_keeps_the_zeros_pruning_makes(cnn):
    model, (x, y), _ = cnn
    schedule = tfc.pruning.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=20, frequency=5)
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    both = C.cluster_weights(pruned, 8, preserve_sparsity=True)
    both.compile(keras.optimizers.Adam(1e-3), LOSS)
    both.fit(x[:960], y[:960], batch_size=32, verbose=0,
             callbacks=[tfc.pruning.UpdatePruningStep()])  # 30 steps: pruning goes on
    plain = tfc.strip(both)
    for path, kernel in _kernels(plain).items():
        assert abs(np.mean(kernel == 0) - 0.6) < 0.01, path
        assert np.unique(kernel).size <= 8, path


def _int8_weights(flatbuffer):
    """`[(op, int8 weight array)]` of the CONV_2D / FULLY_CONNECTED ops of an int8 model."""
    it = interpreter(flatbuffer)
    found = []
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            weights = it.get_tensor(op["inputs"][1])
            assert weights.dtype == np.int8
            found.append((op["op_name"], weights))
    return found


@pytest.mark.parametrize("preserve_sparsity", [False, True], ids=["cqat", "pcqat"])
def test_cluster_preserving_qat_keeps_at_most_k_int8_values_per_channel(cnn, preserve_sparsity):
    """TFMOT's CQAT / PCQAT flow, read back from the int8 flatbuffer."""
    model, (x, y), (xt, yt) = cnn
    base = model
    if preserve_sparsity:
        pruned = tfc.pruning.prune_low_magnitude(
            model, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
        pruned.compile("adam", LOSS)
        pruned.fit(x[:320], y[:320], verbose=0, callbacks=[tfc.pruning.UpdatePruningStep()])
        base = tfc.strip(pruned)
    clustered = tfmot.clustering.keras.experimental.cluster_weights(
        base, number_of_clusters=8, preserve_sparsity=preserve_sparsity)
    _fit(clustered, x[:640], y[:640])
    stripped = tfmot.clustering.keras.strip_clustering(clustered)
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
        preserve_sparsity)
    qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    assert len(tfc.core.find(qat, C.ClusterWeights)) == 5
    _fit(qat, x[:640], y[:640], lr=1e-4)
    weights = _int8_weights(tflite_bytes(qat))
    assert len(weights) == 5
    for _, w in weights:
        per_channel = max(np.unique(w[c]).size for c in range(w.shape[0]))
        assert per_channel <= 8
        if preserve_sparsity:
            assert np.mean(w == 0) >= 0.5 - 1e-3
    plain_qat = tfc.quantization.quantize_model(stripped)  # without the scheme: values spread
    _fit(plain_qat, x[:640], y[:640], lr=1e-3)
    spread = _int8_weights(tflite_bytes(plain_qat))
    assert max(np.unique(w[c]).size for _, w in spread for c in range(w.shape[0])) > 8


def test_clustering_inside_composite_layers_keras_rs_and_keras_hub():
    dcn, x, y = examples.dcn_v2(projection_dim=4, n=128)
    clustered = C.cluster_weights(dcn, 6)
    clustered.compile("adam", "binary_crossentropy")
    clustered.fit(x, y, epochs=1, verbose=0)
    counts = C.unique_values(tfc.strip(clustered))
    assert len(counts) == 5 and max(counts.values()) <= 6  # 2 crosses x (u, v) + head

    bert, xb, yb = examples.bert_classifier(n=32)
    bert_functional = keras.Model(bert.inputs, bert.outputs)  # the task model's graph
    clustered = C.cluster_weights(bert_functional, 16)
    clustered.compile("adam", LOSS)
    clustered.fit(xb, yb, epochs=1, verbose=0)
    counts = C.unique_values(tfc.strip(clustered))
    inside = [p for p in counts if "transformer_layer" in p]
    assert len(inside) >= 12 and max(counts.values()) <= 16


def test_save_load_resume_matches_uninterrupted_run(tmp_path):
    x, y = regression_data(n=128)

    def model():
        keras.utils.set_random_seed(1)
        base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(4)])
        clustered = C.cluster_weights(base, 5, INIT.DENSITY_BASED)
        clustered.compile(keras.optimizers.Adam(1e-2), "mse")
        return clustered

    def fit(m, epochs):
        m.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)

    uninterrupted = model()
    fit(uninterrupted, 4)
    first = model()
    fit(first, 2)
    first.save(tmp_path / "mid.keras")
    resumed = keras.saving.load_model(tmp_path / "mid.keras")
    np.testing.assert_array_equal(resumed.predict(x, verbose=0), first.predict(x, verbose=0))
    fit(resumed, 2)
    np.testing.assert_allclose(resumed.predict(x, verbose=0), uninterrupted.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_clustering_summaries_log_unique_values_and_centroid_drift(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tensorflow as tf

    x, y = regression_data(n=64)
    model = C.cluster_weights(keras.Sequential([keras.Input((16,)), keras.layers.Dense(8),
                                                keras.layers.Dense(4)]), 3)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[tfmot.clustering.keras.ClusteringSummaries(str(tmp_path))])
    acc = EventAccumulator(str(tmp_path / "clustering"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    unique = [t for t in tags if t.endswith("/unique_values")]
    drift = [t for t in tags if t.endswith("/centroid_drift")]
    assert len(unique) == 2 and len(drift) == 2
    assert all(float(tf.make_ndarray(e.tensor_proto)) <= 3 for t in unique for e in acc.Tensors(t))
    last = [float(tf.make_ndarray(acc.Tensors(t)[-1].tensor_proto)) for t in drift]
    assert all(d > 0 for d in last)  # centroids moved
    assert any(t.startswith("clustering/centroids/") for t in tags)


def test_recipe_cluster_then_quantize_keeps_clusters_in_int8(tmp_path):
    (x, y), _, (xt, yt) = examples.digits()
    table = tfc.recipe.run(examples.digits_cnn(width=8),
                           {"cluster": {"number_of_clusters": 8,
                                                                "epochs": 2},
                            "quantize": {}, "export": {"tflite": ["int8"]}},
                           {"x": x, "y": y, "x_test": xt, "y_test": yt}, str(tmp_path))
    assert "unique values (max per kernel)" in table.columns
    weights = _int8_weights((tmp_path / "model_int8.tflite").read_bytes())
    assert len(weights) == 5
    assert all(max(np.unique(w[c]).size for c in range(w.shape[0])) <= 8 for _, w in weights)


@pytest.mark.parametrize("section, match", [
    ({}, "cluster.number_of_clusters"),
    ({"number_of_clusters": 1}, "cluster.number_of_clusters"),
    ({"number_of_clusters": 8, "init": "kmeans"}, "cluster.init"),
    ({"number_of_clusters": 8, "skip_layers": "logits"}, "cluster.skip_layers"),
])
def test_recipe_cluster_section_errors_name_the_setting(section, match):
    with pytest.raises(ValueError, match=match):
        tfc.recipe.validate({"cluster": section})


def test_bad_input_errors_name_the_fix():
    dense = keras.layers.Dense(4)
    with pytest.raises(ValueError, match="at least 2"):
        C.cluster_weights(dense, 1)
    with pytest.raises(ValueError, match="at least 3 with preserve_sparsity"):
        C.cluster_weights(dense, 2, preserve_sparsity=True)
    with pytest.raises(ValueError, match="must be an int"):
        C.cluster_weights(dense, 4.0)
    with pytest.raises(ValueError, match="CentroidInitialization.LINEAR"):
        C.cluster_weights(dense, 4, cluster_centroids_init="middle")
    with pytest.raises(TypeError, match="number_of_clustres"):
        C.cluster_weights(examples.digits_cnn(), 4, number_of_clustres=8)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        C.cluster_weights(Sub(), 4)

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.w

    scale = Scale()
    scale.build((None, 3))
    with pytest.raises(ValueError, match="get_clusterable_weights"):
        C.ClusterWeights(scale, 4)
    with pytest.raises(ValueError, match="get_clusterable_weights"):
        C.ClusterWeights(Scale(), 4)(np.ones((1, 3), "float32"))  # built when first called
    with pytest.raises(ValueError, match="cannot go inside ClusterWeights"):
        C.ClusterWeights(tfc.quantization.QuantizeWrapper(
            keras.layers.Dense(2), tfc.quantization.Default8BitQuantizeConfig()), 4)
