"""TensorBoard summaries of quantization-aware training: activation ranges."""

import re

import numpy as np

from tfcompress.core import find
from tfcompress.core.summaries import Section, Summaries
from tfcompress.quantization.wrapper import QuantizeLayer, QuantizeWrapper


def quantization_section(model, histograms=False):
    """The QAT part of TensorBoard summaries, or None without quantizers.

    Scalars `<layer>/<range>/min` and `/max` for every activation, output and
    input range the model learns (weight ranges are left out: they are the
    weights' own min/max). Each layer's ranges are drawn as one chart.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.quantization.quantize_model(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    sorted(tfc.quantization.callbacks.quantization_section(model).scalars)[:2]
    # ['dense/output_0/max', 'dense/output_0/min'] (names depend on the model)
    ```
    """
    layers = [layer for layer in find(model, (QuantizeWrapper, QuantizeLayer))
              if layer.built]
    if not layers:
        return None
    scalars, charts = {}, {}
    for layer in layers:
        weight_ranges = {id(v) for d in getattr(layer, "_weight_vars", []) for v in d.values()}
        ranges = {v.name: v for v in layer.non_trainable_variables if id(v) not in weight_ranges}
        for name, low in ranges.items():
            high = ranges.get(name[:-len("_min")] + "_max") if name.endswith("_min") else None
            if high is not None:
                base = name[:-len("_min")]
                scalars[f"{layer.name}/{base}/min"] = float(np.min(low))
                scalars[f"{layer.name}/{base}/max"] = float(np.max(high))
        charts[f"ranges of {layer.name}"] = [f"quantization/{re.escape(layer.name)}/"]
    return Section(scalars, {}, charts)


class QuantizationSummaries(Summaries):
    """TensorBoard callback that also logs the activation ranges QAT learns.

    Everything `keras.callbacks.TensorBoard` logs, plus, under
    `<log_dir>/quantization`, `quantization/<layer>/<range>/min` and `/max`
    for every activation range (see `quantization_section`), at each epoch's
    begin and end and every `update_freq` steps when that is an int, on the
    optimizer's step axis. The custom scalars dashboard draws each layer's
    ranges as one chart.

    Example:

    ```python
    import keras, numpy as np, tempfile
    import tfcompress as tfc

    model = tfc.quantization.quantize_model(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0, callbacks=[
        tfc.quantization.QuantizationSummaries(log_dir=tempfile.mkdtemp())])
    ```
    """

    sections = {"quantization": quantization_section}
