"""`ClusterWeights`: a layer whose chosen weights take their values from a few centroids."""

import keras
import numpy as np
import tensorflow as tf

from tfcompress.clustering import centroids, registry
from tfcompress.clustering.config import CentroidInitialization, GradientAggregation, parse
from tfcompress.core import WeightWrapper, rules


@keras.saving.register_keras_serializable("tfcompress")
class ClusterWeights(WeightWrapper):
    """Clusters a layer's weights: each one computes as its nearest centroid.

    Every call assigns each weight to its nearest centroid and the layer
    computes with the centroids' values, so a kernel holds at most
    `number_of_clusters` distinct values (per output channel with
    `cluster_per_channel`). The centroids are trainable and get the summed
    (or averaged) gradients of their weights; the weights themselves train
    too (a straight-through estimator), so assignments move during `fit`.
    `tfcompress.strip` bakes the clustered values into a plain layer. Around
    a pruning wrapper (a model pruned and clustered in one `fit`), the zeros
    pruning makes stay zero: with `preserve_sparsity` zero is one of the
    centroids, otherwise it is one value more.

    Args:
        layer: the layer to cluster (see `tfcompress.clustering.registry`).
        number_of_clusters: centroids per kernel (per channel), > 1
            (> 2 with `preserve_sparsity`: one centroid is zero).
        cluster_centroids_init: a `CentroidInitialization`.
        preserve_sparsity: zero weights stay zero and one centroid is fixed at
            zero (sparsity-preserving clustering of a pruned model).
        cluster_per_channel: Conv2D only: centroids per output channel.
        cluster_gradient_aggregation: a `GradientAggregation`.
        weight_names: names of the inner layer's weights to cluster,
            overriding the registry.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc

    layer = tfc.clustering.ClusterWeights(keras.layers.Dense(8), number_of_clusters=4)
    y = layer(np.ones((2, 16), "float32"))
    assert len(np.unique(tfc.strip(layer).kernel.numpy())) <= 4
    ```
    """

    order = 20

    def __init__(self, layer, number_of_clusters, cluster_centroids_init=CentroidInitialization.KMEANS_PLUS_PLUS,
                 preserve_sparsity=False, cluster_per_channel=False,
                 cluster_gradient_aggregation=GradientAggregation.SUM, weight_names=None,
                 **kwargs):
        if isinstance(layer, keras.Model):
            raise ValueError("ClusterWeights wraps a layer; to cluster a model use "
                             "cluster_weights(model, number_of_clusters=...).")
        base = layer.computing_layer() if isinstance(layer, WeightWrapper) else layer
        if weight_names is None and base.weights and not registry.has_rule(base):
            raise registry.unsupported_error(base)
        if isinstance(number_of_clusters, bool) or not isinstance(
                number_of_clusters, (int, np.integer)):
            raise ValueError("number_of_clusters must be an int, e.g. 16; got "
                             f"{number_of_clusters!r}.")
        least = 3 if preserve_sparsity else 2
        if number_of_clusters < least:
            raise ValueError(
                f"number_of_clusters must be at least {least}"
                + (" with preserve_sparsity=True (one centroid is kept at zero)"
                   if preserve_sparsity else "") + f"; got {number_of_clusters}.")
        super().__init__(layer, **kwargs)
        self.number_of_clusters = int(number_of_clusters)
        self.cluster_centroids_init = parse(CentroidInitialization, cluster_centroids_init,
                                            "cluster_centroids_init")
        self.cluster_gradient_aggregation = parse(
            GradientAggregation, cluster_gradient_aggregation, "cluster_gradient_aggregation")
        self.preserve_sparsity = bool(preserve_sparsity)
        self.cluster_per_channel = bool(cluster_per_channel) and isinstance(
            base, keras.layers.Conv2D)
        self.weight_names = None if weight_names is None else list(weight_names)
        self.centroids, self.sparsity_masks, self.zero_indices = [], [], []
        self._seeds = None

    def seed(self, rows):
        """Starts the centroids at `rows` (one `(sets, k)` array per weight) instead of
        `cluster_centroids_init`; call before the wrapper is built."""
        if self.built:
            raise ValueError(f"'{self.name}' is built; seed its centroids before it is.")
        self._seeds = [np.asarray(r, np.float32) for r in rows]

    def target_weights(self):
        return registry.clusterable_weights(self.computing_layer(), self.weight_names)

    def build_state(self, targets):
        layer = self.computing_layer()
        for weight in targets:
            name = rules.relative_path(weight, layer).replace("/", "_")
            value = keras.ops.convert_to_numpy(weight)
            if self._seeds is not None:
                start = self._seeds[len(self.centroids)]
            else:
                start = np.stack([centroids.initial(r, self.number_of_clusters,
                                                    self.cluster_centroids_init,
                                                    self.preserve_sparsity,
                                                    refine=self.cluster_per_channel
                                                    or self.preserve_sparsity)
                                  for r in self._rows(value)])
            shape = start.shape if self.cluster_per_channel else start.shape[1:]
            variable = self.add_weight(name=f"{name}_centroids", shape=shape, dtype=weight.dtype,
                                       initializer="zeros", trainable=True)
            variable.assign(start.reshape(shape))
            initial = self.add_weight(name=f"{name}_initial_centroids", shape=shape,
                                      dtype=weight.dtype, initializer="zeros", trainable=False)
            initial.assign(start.reshape(shape))
            self.centroids.append((variable, initial))
            if self.preserve_sparsity:
                mask = self.add_weight(name=f"{name}_sparsity_mask", shape=weight.shape,
                                       dtype=weight.dtype, initializer="ones", trainable=False)
                mask.assign((value != 0).astype(value.dtype))
                zero = self.add_weight(name=f"{name}_zero_index", shape=shape[:-1],
                                       dtype="int32", initializer="zeros", trainable=False)
                zero.assign(np.argmin(np.abs(start), axis=-1).reshape(shape[:-1]))
                self.sparsity_masks.append(mask)
                self.zero_indices.append(zero)

    def _rows(self, value):
        """The groups clustered separately: the whole kernel, or each output channel."""
        if self.cluster_per_channel:
            return np.moveaxis(value, -1, 0).reshape(value.shape[-1], -1)
        return value.reshape(1, -1)

    def transform_weights(self, values, training):
        out = []
        for i, (value, (variable, _)) in enumerate(zip(values, self.centroids)):
            mask = self.sparsity_masks[i] if self.preserve_sparsity else None
            zero = self.zero_indices[i] if self.preserve_sparsity else None
            clustered = assign(value if mask is None else value * mask, variable.value,
                               zero, self.cluster_gradient_aggregation)
            if mask is not None:
                clustered = clustered * mask
            if isinstance(self.layer, WeightWrapper):
                # Zeros the wrapper inside made (pruning's) stay zero.
                clustered = clustered * tf.cast(tf.not_equal(value, 0), clustered.dtype)
            if training:
                # Straight through to the weights; a zero kept by the mask gets no gradient.
                clustered = _straight_through(
                    clustered, value, 1.0 if mask is None else tf.convert_to_tensor(mask))
            out.append(clustered)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(number_of_clusters=self.number_of_clusters,
                      cluster_centroids_init=self.cluster_centroids_init.value,
                      preserve_sparsity=self.preserve_sparsity,
                      cluster_per_channel=self.cluster_per_channel,
                      cluster_gradient_aggregation=self.cluster_gradient_aggregation.value,
                      weight_names=self.weight_names)
        return config


def assign(weight, centroids, zero_index=None, aggregation=GradientAggregation.SUM):
    """`weight` with each value replaced by its nearest centroid.

    `centroids` is `(k,)`, or `(channels, k)` for one set per last-axis
    channel. `zero_index` (one per set) pins that centroid at zero. The
    nearest centroid is found by bucketing against the sorted centroids'
    midpoints, so the work grows with the weight, not with weight × k.

    Example:

    ```python
    import numpy as np
    from tfcompress.clustering.wrapper import assign
    w = assign(np.array([0.1, 0.9, 0.4], "float32"), np.array([0.0, 1.0], "float32"))
    assert list(np.asarray(w)) == [0.0, 1.0, 0.0]
    ```
    """
    weight = tf.convert_to_tensor(weight)
    centroids = tf.convert_to_tensor(centroids, weight.dtype)
    per_channel = len(centroids.shape) == 2
    k = centroids.shape[-1]
    sets = centroids if per_channel else centroids[None]
    if zero_index is not None:
        pinned = tf.one_hot(tf.reshape(zero_index, [-1]), k, dtype=weight.dtype)
        sets = sets * (1.0 - pinned)
    if per_channel:
        rows = tf.transpose(tf.reshape(weight, [-1, weight.shape[-1]]))
    else:
        rows = tf.reshape(weight, [1, -1])
    order = tf.argsort(sets, axis=-1)
    ordered = tf.gather(sets, order, batch_dims=1)
    bucket = tf.searchsorted(tf.stop_gradient((ordered[:, 1:] + ordered[:, :-1]) / 2),
                             tf.stop_gradient(rows))
    if aggregation is GradientAggregation.AVG:
        sets_count = ordered.shape[0]
        segments = bucket + k * tf.range(sets_count, dtype=bucket.dtype)[:, None]
        sizes = tf.reshape(tf.math.unsorted_segment_sum(
            tf.ones_like(rows), segments, sets_count * k), [sets_count, k])  # XLA-safe count
        ordered = _scale_gradient(ordered, 1.0 / tf.maximum(sizes, 1.0))
    picked = tf.gather(ordered, bucket, batch_dims=1)
    if per_channel:
        return tf.reshape(tf.transpose(picked), tf.shape(weight))
    return tf.reshape(picked, tf.shape(weight))


@tf.custom_gradient
def _scale_gradient(x, scale):
    return tf.identity(x), lambda dy: (dy * scale, tf.zeros_like(scale))


@tf.custom_gradient
def _straight_through(clustered, weight, mask):
    """The clustered values forward; the gradient also reaches the weights (times `mask`)."""
    return tf.identity(clustered), lambda dy: (dy, dy * mask, None)
