"""Quantization-aware training (QAT) for Keras 3, exported as int8 TFLite.

prepare: `quantize_model(model)` → fake-quant where TFLite runs int8
fit:     an ordinary `model.fit` (ranges learn as moving averages)
export:  `tf.lite.TFLiteConverter` + `Optimize.DEFAULT`, no representative data
"""

from tfcompress import core
from tfcompress.quantization import stage
from tfcompress.quantization import callbacks
from tfcompress.quantization.api import (
    Default8BitClusterPreserveQuantizeScheme,
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitQuantizeScheme,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
)
from tfcompress.quantization.callbacks import QuantizationSummaries
from tfcompress.quantization.config import Default8BitQuantizeConfig, QuantizeConfig
from tfcompress.quantization.quantizers import (
    AllValuesQuantizer,
    DepthwiseWeightsQuantizer,
    FixedRangeQuantizer,
    LastValueQuantizer,
    MatmulWeightsQuantizer,
    MovingAverageQuantizer,
    Quantizer,
)
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeLayer, QuantizeWrapper

__all__ = [
    "AllValuesQuantizer", "Default8BitClusterPreserveQuantizeScheme",
    "Default8BitPrunePreserveQuantizeScheme", "Default8BitQuantizeConfig",
    "Default8BitQuantizeScheme", "DepthwiseWeightsQuantizer", "FixedRangeQuantizer",
    "LastValueQuantizer", "MatmulWeightsQuantizer", "MovingAverageQuantizer",
    "QuantizationSummaries", "QuantizeAnnotate",
    "QuantizeConfig", "QuantizeLayer", "QuantizeWrapper", "Quantizer", "quantize_annotate_layer",
    "quantize_annotate_model", "quantize_apply", "quantize_model", "quantize_scope",
]

core.register(core.Technique("quantization", section=callbacks.quantization_section, stage=stage.STAGE))
