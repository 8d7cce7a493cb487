"""`tfmot.experimental.combine` names (collaborative optimization), for Keras 3. Aliases only.

```python
import tfcompress as tfmot
scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
```
"""

import types

from tfcompress.quantization import (
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
)

#: `tfmot.experimental.combine.*`: prune-preserving (PQAT), cluster-preserving (CQAT) and
#: sparsity- and cluster-preserving (PCQAT: `preserve_sparsity=True`) QAT.
combine = types.SimpleNamespace(
    Default8BitPrunePreserveQuantizeScheme=Default8BitPrunePreserveQuantizeScheme,
    Default8BitClusterPreserveQuantizeScheme=Default8BitClusterPreserveQuantizeScheme)

__all__ = ["combine"]
