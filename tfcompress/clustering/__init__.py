"""Weight clustering (weight sharing), inside `model.fit`.

prepare: `cluster_weights(model, number_of_clusters=16)`
fit:     `model.fit(...)` (optionally `ClusteringSummaries(log_dir)`)
strip:   `strip_clustering(model)` → plain Keras model whose kernels hold at
         most `number_of_clusters` distinct values each.
"""

from tfcompress import core
from tfcompress.clustering import api, callbacks, centroids, registry, stage
from tfcompress.clustering.api import cluster_scope, cluster_weights, strip_clustering, unique_values
from tfcompress.clustering.callbacks import ClusteringSummaries
from tfcompress.clustering.config import CentroidInitialization, GradientAggregation
from tfcompress.clustering.registry import ClusterableLayer
from tfcompress.clustering.wrapper import ClusterWeights

__all__ = [
    "CentroidInitialization", "ClusterWeights", "ClusterableLayer", "ClusteringSummaries",
    "GradientAggregation", "centroids", "cluster_scope", "cluster_weights", "registry",
    "strip_clustering", "unique_values",
]


def _columns(model):
    """The most distinct values in one kernel, for clustered models only."""
    if not api.shares_values(model):
        return {}
    return {"unique values (max per kernel)": max(unique_values(model).values())}


core.register(core.Technique("clustering", section=callbacks.clustering_section,
                             stage=stage.STAGE, columns=_columns, preserve=api.preserve))
