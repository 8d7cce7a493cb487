"""`tfmot.quantization.keras` names, for Keras 3. Aliases only: see `tfcompress.quantization`.

```python
import tfcompress as tfmot
quantize_model = tfmot.quantization.keras.quantize_model
```
"""

import types

from tfcompress.quantization import (
    AllValuesQuantizer,
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitQuantizeScheme,
    LastValueQuantizer,
    MovingAverageQuantizer,
    QuantizeConfig,
    QuantizeLayer,
    QuantizeWrapper,
    Quantizer,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
)

#: `tfmot.quantization.keras.quantizers.*`
quantizers = types.SimpleNamespace(
    Quantizer=Quantizer, LastValueQuantizer=LastValueQuantizer,
    MovingAverageQuantizer=MovingAverageQuantizer, AllValuesQuantizer=AllValuesQuantizer)

#: `tfmot.quantization.keras.default_8bit.*` and the prune-preserving scheme.
default_8bit = types.SimpleNamespace(Default8BitQuantizeScheme=Default8BitQuantizeScheme)
collab_opts = types.SimpleNamespace(
    Default8BitPrunePreserveQuantizeScheme=Default8BitPrunePreserveQuantizeScheme,
    Default8BitClusterPreserveQuantizeScheme=Default8BitClusterPreserveQuantizeScheme)

QuantizeWrapperV2 = QuantizeWrapper

__all__ = [
    "QuantizeConfig", "QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2", "collab_opts",
    "default_8bit", "quantize_annotate_layer", "quantize_annotate_model", "quantize_apply",
    "quantize_model", "quantize_scope", "quantizers",
]
