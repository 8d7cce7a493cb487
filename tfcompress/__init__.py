"""tfcompress: pruning, clustering, low-rank factorization, quantization-aware training and
distillation for Keras 3.

```python
import tfcompress as tfc          # native API: tfc.pruning.*, tfc.clustering.*, ...
import tfcompress as tfmot        # TFMOT names: tfmot.sparsity.keras.*, tfmot.clustering.keras.*,
                                  # tfmot.quantization.keras.*
```
"""

__version__ = "0.1.0"

from tfcompress import analysis, auto, core, clustering, distillation, embeddings, experimental, export, factorization, pruning, quantization, recipe, report, sparsity  # noqa: E402,E501  (registers Keras classes)
from tfcompress.clustering import keras as _tfmot_clustering  # noqa: E402,F401
from tfcompress.quantization import keras as _tfmot_quantization  # noqa: E402,F401
from tfcompress.core import CompressionSummaries, shrink, strip  # noqa: E402

__all__ = ["CompressionSummaries", "__version__", "analysis", "auto", "clustering", "core", "distillation",
           "embeddings", "experimental", "export", "factorization", "pruning", "quantization", "recipe", "report", "shrink", "sparsity", "strip"]
