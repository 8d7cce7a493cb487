"""Embedding-table compression: drop-in tables that train in `fit` and export small.

```python
import tfcompress as tfc
model = tfc.embeddings.compress_embeddings(model, "rowwise_int4", min_rows=10_000)
model.fit(...)
tfc.export.to_tflite(tfc.strip(model), "model.tflite")   # tables stored int8, one scale per row
```
"""

from tfcompress import core
from tfcompress.embeddings import rowcodes, rowwise, stage
from tfcompress.embeddings.api import METHODS, compress_embeddings
from tfcompress.embeddings.rowwise import Int8RowsEmbedding, RowwiseQuantize
from tfcompress.embeddings.rows_pruning import PruneRows, RemappedEmbedding
from tfcompress.embeddings.tables import (HashedEmbedding, MixedDimEmbedding, QREmbedding,
                                         Table, mixed_dim_blocks)

__all__ = ["HashedEmbedding", "Int8RowsEmbedding", "METHODS", "MixedDimEmbedding", "PruneRows",
           "QREmbedding", "RemappedEmbedding", "RowwiseQuantize", "compress_embeddings",
           "mixed_dim_blocks", "rowcodes", "rowwise", "stage"]

def _columns(model):
    """Bytes of the model's embedding tables as its stripped form stores them."""
    import keras
    import numpy as np

    from tfcompress.core.strip import needs_strip

    plain = core.strip(model) if needs_strip(model) else model
    tables = [layer for layer in core.find(plain, (keras.layers.Embedding, Table))]
    if not tables:
        return {}
    return {"table bytes": sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                               for layer in tables for w in layer.weights)}


core.register(core.Technique("embeddings", stage=stage.STAGE, columns=_columns))
