"""`tfmot.clustering.keras` names, for Keras 3. Aliases only: see `tfcompress.clustering`.

```python
import tfcompress as tfmot
cluster_weights = tfmot.clustering.keras.cluster_weights
```
"""

import types

from tfcompress.clustering import (
    CentroidInitialization,
    ClusterableLayer,
    ClusteringSummaries,
    GradientAggregation,
    cluster_scope,
    cluster_weights,
    strip_clustering,
)

#: `tfmot.clustering.keras.experimental.cluster_weights(..., preserve_sparsity=True)`.
experimental = types.SimpleNamespace(cluster_weights=cluster_weights)

__all__ = [
    "CentroidInitialization", "ClusterableLayer", "ClusteringSummaries", "GradientAggregation",
    "cluster_scope", "cluster_weights", "experimental", "strip_clustering",
]
