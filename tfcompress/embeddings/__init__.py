"""Embedding-table compression: drop-in tables that train in `fit` and export small.

```python
import tfcompress as tfc
model = tfc.embeddings.compress_embeddings(model, "rowwise_int4", min_rows=10_000)
model.fit(...)
tfc.export.to_tflite(tfc.strip(model), "model.tflite")   # tables stored int8, one scale per row
```
"""

from tfcompress import core
from tfcompress.embeddings import rowwise
from tfcompress.embeddings.api import METHODS, compress_embeddings
from tfcompress.embeddings.rowwise import Int8RowsEmbedding, RowwiseQuantize
from tfcompress.embeddings.rows_pruning import PruneRows, RemappedEmbedding
from tfcompress.embeddings.tables import HashedEmbedding, QREmbedding

__all__ = ["HashedEmbedding", "Int8RowsEmbedding", "METHODS", "PruneRows", "QREmbedding",
           "RemappedEmbedding", "RowwiseQuantize", "compress_embeddings", "rowwise"]

core.register(core.Technique("embeddings"))
