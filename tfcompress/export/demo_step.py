"""The export step of `tfcompress demo`: int8 `.tflite`, SavedModel, verify report."""

import os

from tfcompress.export.saved_model import to_saved_model
from tfcompress.export.tflite import to_tflite
from tfcompress.export.verify import verify


def demo_step(model, out_dir, representative_data, x_test, y_test):
    """Writes `model` as `model_int8.tflite` and `saved_model/` under `out_dir`, prints the verify report.

    Both files are replaced if they exist (the demo may run again into the
    same directory). Returns the `VerifyReport` of the int8 flatbuffer.

    Example:

    ```python
    from tfcompress import examples, export
    (x, y), _, (xt, yt) = examples.digits()
    report = export.demo_step(examples.digits_cnn(), "/tmp/demo", x[:200], xt, yt)
    ```
    """
    tflite_path = os.path.join(out_dir, "model_int8.tflite")
    saved_path = os.path.join(out_dir, "saved_model")
    to_tflite(model, tflite_path, mode="int8", representative_data=representative_data,
              overwrite=True)
    to_saved_model(model, saved_path, overwrite=True)
    report = verify(tflite_path, model, (x_test, y_test))
    print(report)
    print()
    print(f"exports: {tflite_path} (int8 TFLite), {saved_path} (SavedModel, serving_default)")
    return report
