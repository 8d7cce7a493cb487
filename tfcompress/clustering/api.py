"""prepare → fit → strip: the clustering entry points (TFMOT's names and arguments)."""

import warnings

import keras

from tfcompress.clustering import registry
from tfcompress.clustering.config import CentroidInitialization
from tfcompress.clustering.wrapper import ClusterWeights
from tfcompress.core import WeightWrapper, copy_layer, is_graph_model, map_layers, strip

#: Keyword arguments `cluster_weights` passes to every `ClusterWeights`.
WRAPPER_KWARGS = ("preserve_sparsity", "cluster_per_channel", "cluster_gradient_aggregation",
                  "weight_names")


def cluster_weights(to_cluster, number_of_clusters, cluster_centroids_init=
                    CentroidInitialization.KMEANS_PLUS_PLUS, **kwargs):
    """Wraps a layer, a list of layers, or a Sequential/functional model for clustering.

    TFMOT's function, for Keras 3. On a model, every layer with clusterable
    weights (Dense, Conv, Embedding, RNN, attention, ... see
    `registry.CLUSTERABLE`), also inside composite layers and nested models,
    is wrapped in `ClusterWeights`; the others are copied as they are. A
    layer still wrapped by a technique that goes before clustering (pruning)
    is clustered around that wrapper. The original model is not changed.
    Train the result with an ordinary `fit`, then `strip_clustering` it.

    Args:
        to_cluster: a layer, a list of layers, or a Sequential/functional model.
        number_of_clusters: centroids per kernel (see `ClusterWeights`).
        cluster_centroids_init: a `CentroidInitialization`.
        **kwargs: `preserve_sparsity`, `cluster_per_channel`,
            `cluster_gradient_aggregation` (see `ClusterWeights`);
            `weight_names`: a list, or on a model a dict keyed by layer name
            or class name (an empty list leaves that layer unclustered). A
            single layer also takes Keras layer arguments (`name`, ...).

    Example:

    ```python
    import keras
    import tfcompress as tfc
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
                             keras.layers.Dense(2)])
    clustered = tfc.clustering.cluster_weights(
        base, number_of_clusters=8,
        cluster_centroids_init=tfc.clustering.CentroidInitialization.LINEAR)
    ```
    """
    params = dict(number_of_clusters=number_of_clusters,
                  cluster_centroids_init=cluster_centroids_init)
    is_model = isinstance(to_cluster, keras.Model)
    wrapper_kwargs = {k: kwargs.pop(k) for k in WRAPPER_KWARGS if k in kwargs}
    if kwargs and (is_model or isinstance(to_cluster, (list, tuple))):
        raise TypeError(f"cluster_weights got unknown keyword argument(s) {sorted(kwargs)}; "
                        f"it takes number_of_clusters, cluster_centroids_init and "
                        f"{', '.join(WRAPPER_KWARGS)}.")
    if is_model:
        if not is_graph_model(to_cluster):
            raise ValueError(
                f"{type(to_cluster).__name__} is a subclassed model: its layers are created "
                "in Python code and cannot be rewrapped from outside. Wrap them where the "
                "model creates them: `self.dense = tfcompress.clustering.cluster_weights("
                "keras.layers.Dense(64), number_of_clusters=16)`.")
        return map_layers(to_cluster, lambda layer: _wrap(layer, params, wrapper_kwargs))
    if isinstance(to_cluster, (list, tuple)):
        return [_wrap(layer, params, wrapper_kwargs, copy=False) for layer in to_cluster]
    if isinstance(to_cluster, keras.layers.Layer):
        if isinstance(to_cluster, ClusterWeights):
            raise ValueError(f"Layer '{to_cluster.name}' is already wrapped by ClusterWeights; "
                             "cluster_weights must be applied once per layer.")
        return ClusterWeights(to_cluster, **params, **wrapper_kwargs, **kwargs)
    raise ValueError("cluster_weights takes a keras Layer, a list of layers, or a "
                     f"Sequential/functional keras Model; got {type(to_cluster).__name__}.")


def _wrap(layer, params, kwargs, copy=True):
    if isinstance(layer, ClusterWeights):
        return copy_layer(layer) if copy else layer
    base = layer.computing_layer() if isinstance(layer, WeightWrapper) else layer
    names = kwargs.get("weight_names")
    if isinstance(names, dict):
        names = names.get(layer.name, names.get(base.name, names.get(type(base).__name__)))
    if names is not None and not list(names):
        return copy_layer(layer) if copy else layer
    if names is None:
        if not base.built and not registry.has_rule(base):
            return copy_layer(layer) if copy else layer
        if base.built and not registry.split(base)[0]:
            return copy_layer(layer) if copy else layer
    inner = copy_layer(layer) if copy else layer
    return ClusterWeights(inner, **params, **{**kwargs, "weight_names": names})


def strip_clustering(model):
    """Returns a copy of `model` with the clustered values baked into plain layers.

    TFMOT's name for `tfcompress.strip`: after it each clustered kernel holds
    at most `number_of_clusters` distinct values (per channel with
    `cluster_per_channel`), the outputs are those of the clustered model, and
    no tfcompress class remains. A model with no wrappers comes back as is.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    clustered = tfc.clustering.cluster_weights(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)]), number_of_clusters=3)
    plain = tfc.clustering.strip_clustering(clustered)
    ```
    """
    if not isinstance(model, (keras.Model, ClusterWeights)):
        raise ValueError("strip_clustering takes a keras Model or a ClusterWeights layer; "
                         f"got {type(model).__name__}.")
    return strip(model)


def cluster_scope():
    """A custom-object scope holding the clustering classes (TFMOT compatibility).

    tfcompress registers its classes with Keras on import, so a clustered
    `.keras` file loads with `keras.saving.load_model` once tfcompress is
    imported; the scope is kept for code written against TFMOT.

    Example:

    ```python
    import tfcompress as tfc
    with tfc.clustering.cluster_scope():
        pass  # keras.saving.load_model("clustered.keras")
    ```
    """
    return keras.saving.custom_object_scope({"ClusterWeights": ClusterWeights})


def unique_values(model):
    """`{weight path: distinct values}` of every clusterable kernel of `model`, as it computes.

    Wrapped layers count the values they compute with (clustered, pruned);
    plain layers their stored weights.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.clustering.cluster_weights(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)]), number_of_clusters=3)
    assert max(tfc.clustering.unique_values(model).values()) <= 3
    ```
    """
    import numpy as np

    return {path: int(np.unique(value).size) for path, value in _kernel_values(model).items()}


def shares_values(model):
    """True when `model` is being clustered, or some kernel of it holds far fewer distinct
    values than weights (a clustered model after `strip_clustering`).

    Pruned kernels do not count: their non-zero values are all different.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    assert not tfc.clustering.api.shares_values(model)
    assert tfc.clustering.api.shares_values(tfc.clustering.cluster_weights(model, 8))
    ```
    """
    import numpy as np

    from tfcompress.core import find

    if find(model, ClusterWeights):
        return True
    for value in _kernel_values(model).values():
        nonzero = value[value != 0]
        if nonzero.size >= 64 and np.unique(nonzero).size <= min(
                MAX_PRESERVED_CLUSTERS, nonzero.size // 16):
            return True
    return False


def _kernel_values(model):
    """`{weight path: values the layer computes with}` of every clusterable kernel."""
    values, seen = {}, set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, WeightWrapper):
            inner = layer.computing_layer()
            seen.update(id(w) for w in inner.weights)
            if not inner.built:
                continue
            baked = dict(zip((id(w) for w in inner.weights), layer.baked_weights()))
            for weight in registry.split(inner)[0]:
                values[weight.path] = baked[id(weight)]
        elif layer.built and not layer._flatten_layers(include_self=False, recursive=False):
            for weight in registry._rule(layer) or []:
                if id(weight) not in seen:
                    seen.add(id(weight))
                    values[weight.path] = keras.ops.convert_to_numpy(weight)
    if not values and not model.built:
        warnings.warn(f"Model '{model.name}' is not built; it has no weights to count.")
    return values


#: A kernel with more distinct values than this is not treated as clustered.
MAX_PRESERVED_CLUSTERS = 1024


def preserve(layer, preserve_sparsity=False):
    """`ClusterWeights` around a plain built `layer` whose kernels are already clustered.

    What cluster-preserving QAT needs after `strip_clustering`: each kernel's
    distinct values become its centroids again (per output channel for a
    Conv2D clustered that way), so training keeps at most that many values
    per kernel. None when no clusterable kernel has between 2 and
    `MAX_PRESERVED_CLUSTERS` distinct values.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc
    dense = keras.layers.Dense(8)
    dense.build((None, 4))
    dense.kernel.assign(np.tile([[-1.0, 1.0]], (4, 4)))
    assert tfc.clustering.api.preserve(dense).number_of_clusters == 2
    ```
    """
    import numpy as np

    if isinstance(layer, WeightWrapper) or not layer.built:
        return None
    weights = registry.split(layer)[0]
    values = [keras.ops.convert_to_numpy(w) for w in weights]
    counts = [np.unique(v).size for v in values]
    if not counts or max(counts) > MAX_PRESERVED_CLUSTERS or max(counts) < 2:
        return None
    per_channel = isinstance(layer, keras.layers.Conv2D) and all(
        v.ndim == 4 and max(np.unique(c).size for c in np.moveaxis(v, -1, 0)) < n
        for v, n in zip(values, counts))
    if per_channel:
        rows = [[np.unique(c) for c in np.moveaxis(v, -1, 0)] for v in values]
    else:
        rows = [[np.unique(v)] for v in values]
    number = max(len(r) for row in rows for r in row)
    number = max(number, 3) if preserve_sparsity else number  # zero is one of them
    wrapper = ClusterWeights(layer, number, preserve_sparsity=preserve_sparsity,
                             cluster_per_channel=per_channel,
                             weight_names=None if registry.has_rule(layer) else [
                                 w.name for w in weights])
    # The centroids start at the distinct values found (repeated to one length).
    wrapper.seed([np.stack([np.concatenate([r, np.full(number - r.size, r[-1])]) for r in row])
                  for row in rows])
    return wrapper
