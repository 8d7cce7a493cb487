"""tfcompress: pruning, quantization-aware training and distillation for Keras 3.

```python
import tfcompress as tfc          # native API: tfc.pruning.*
import tfcompress as tfmot        # TFMOT names: tfmot.sparsity.keras.*
```
"""

__version__ = "0.1.0"

from tfcompress import core, pruning, sparsity  # noqa: E402  (registers Keras classes)

__all__ = ["__version__", "core", "pruning", "sparsity"]
