"""`tfmot.experimental.combine` names (collaborative optimization), for Keras 3. Aliases only.

```python
import tfcompress as tfmot
scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
```
"""

import types

from tfcompress.quantization import Default8BitPrunePreserveQuantizeScheme

#: `tfmot.experimental.combine.*`: prune-preserving QAT.
combine = types.SimpleNamespace(
    Default8BitPrunePreserveQuantizeScheme=Default8BitPrunePreserveQuantizeScheme)

__all__ = ["combine"]
