"""Deployable artifacts from compressed Keras 3 models, verified.

```python
import tfcompress as tfc
from tfcompress import examples

(x, y), _, (x_test, y_test) = examples.digits()
model = examples.digits_cnn()  # trained, pruned, quantization-aware: any of these
tfc.export.to_tflite(model, "/tmp/model.tflite", mode="int8",
                     representative_data=x[:200], overwrite=True)
tfc.export.to_saved_model(model, "/tmp/serving/model/1", overwrite=True)
print(tfc.export.verify("/tmp/model.tflite", model, (x_test, y_test)))
```

- `to_tflite`: float, dynamic-range, float16, full int8 and 16x8 flatbuffers,
  TFLite builtins only unless `allow_tf_ops=True`.
- `to_saved_model`: a SavedModel with a `serving_default` signature (named
  inputs and outputs, dynamic batch) for TF Serving.
- `verify`: max abs difference and decision agreement with the Keras model,
  the op/dtype census, bytes and gzip bytes, LiteRT batch-1 latency.

Writes are atomic and never replace an existing file unless `overwrite=True`.
"""

from tfcompress.export import census, data, signature
from tfcompress.export.demo_step import demo_step
from tfcompress.export.saved_model import to_saved_model
from tfcompress.export.tflite import IO_TYPES, MODES, to_tflite
from tfcompress.export.verify import VerifyReport, verify

__all__ = [
    "IO_TYPES", "MODES", "VerifyReport", "census", "data", "demo_step",
    "signature", "to_saved_model", "to_tflite", "verify",
]
