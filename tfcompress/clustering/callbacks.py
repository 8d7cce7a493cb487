"""Clustering in TensorBoard: centroid drift and distinct values per kernel."""

import numpy as np

from tfcompress.clustering.wrapper import ClusterWeights
from tfcompress.core import find
from tfcompress.core.summaries import Section, Summaries


def clustering_section(model, histograms=False):
    """The clustering part of TensorBoard summaries, or None without clustering.

    Scalars per clustered weight: `<wrapper>/<weight>/unique_values` (the
    distinct values the layer computes with) and
    `<wrapper>/<weight>/centroid_drift` (mean absolute move of its centroids
    since they were initialised); histograms, when asked for, of the
    centroids. The charts draw each as one multi-line chart.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.clustering.cluster_weights(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)]), number_of_clusters=3)
    sorted(tfc.clustering.callbacks.clustering_section(model).charts)
    # ['centroid drift', 'unique values per layer']
    ```
    """
    wrappers = [w for w in find(model, ClusterWeights) if w.built]
    if not wrappers:
        return None
    scalars, kept = {}, {}
    for wrapper in wrappers:
        baked = dict(zip((id(v) for v in wrapper.computing_layer().weights),
                         wrapper.baked_weights()))
        for weight, (centroids, initial) in zip(wrapper.targets, wrapper.centroids):
            tag = f"{wrapper.name}/{weight.name}"
            scalars[f"{tag}/unique_values"] = float(np.unique(baked[id(weight)]).size)
            now = np.asarray(centroids)
            scalars[f"{tag}/centroid_drift"] = float(np.abs(now - np.asarray(initial)).mean())
            if histograms:
                kept[f"centroids/{tag}"] = now
    charts = {"unique values per layer": [r"clustering/.*/unique_values$"],
              "centroid drift": [r"clustering/.*/centroid_drift$"]}
    return Section(scalars, kept, charts)


class ClusteringSummaries(Summaries):
    """TensorBoard callback that also logs clustering (TFMOT's name and arguments).

    Everything `keras.callbacks.TensorBoard` logs, plus, under
    `<log_dir>/clustering`, each clustered weight's distinct values and
    centroid drift (`clustering_section`), at each epoch's end or every
    `cluster_update_freq` steps (`"batch"`: every step), and histograms of
    the centroids at each epoch's end. `tfcompress.CompressionSummaries` logs
    clustering together with every other technique.

    Example:

    ```python
    import keras, numpy as np, tempfile
    import tfcompress as tfc

    model = tfc.clustering.cluster_weights(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)]), number_of_clusters=3)
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 8)), verbose=0, callbacks=[
        tfc.clustering.ClusteringSummaries(log_dir=tempfile.mkdtemp())])
    ```
    """

    sections = {"clustering": clustering_section}

    def __init__(self, log_dir="logs", cluster_update_freq="epoch", **kwargs):
        if "update_freq" not in kwargs:
            kwargs["update_freq"] = 1 if cluster_update_freq == "batch" else cluster_update_freq
        super().__init__(log_dir, **kwargs)
