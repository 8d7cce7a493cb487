"""Training batches whose statistics were NaN/Inf: counted in the model, reported once.

A technique that learns statistics from the data (QAT's activation ranges)
keeps its state as it was when a batch gives a non-finite value, and counts
the batch in a variable whose name ends in `COUNTER`. `warn_skipped` reads
those counters and warns, once per new count, naming each layer: tfcompress's
callbacks call it when `fit` ends, and the exports call it before writing.
"""

import warnings
import weakref

import numpy as np

COUNTER = "nonfinite_batches"
_warned = weakref.WeakKeyDictionary()  # model -> the counts already reported


def skipped_batches(model):
    """`{layer path: batches skipped}`: the largest count over each layer's counters.

    Example:

    ```python
    import keras
    from tfcompress.core import nonfinite
    nonfinite.skipped_batches(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))  # {}
    ```
    """
    found = {}
    for variable in model.variables:
        if not variable.path.endswith(COUNTER):
            continue
        count = int(variable.numpy())
        if count:
            layer = variable.path.rsplit("/", 1)[0]
            found[layer] = max(found.get(layer, 0), count)
    return found


def warn_skipped(model):
    """Warns (`RuntimeWarning`) naming the layers that skipped non-finite batches, once per count.

    Example:

    ```python
    import keras
    from tfcompress.core import nonfinite
    nonfinite.warn_skipped(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))  # silent
    ```
    """
    found = skipped_batches(model)
    if not found or _warned.get(model) == found:
        return found
    _warned[model] = dict(found)
    listed = ", ".join(f"'{layer}' ({count:,} batch{'es' * (count != 1)})"
                       for layer, count in sorted(found.items()))
    warnings.warn(
        f"Model '{model.name}' saw training batches with NaN/Inf values: their "
        f"statistics were skipped and the learned ranges kept finite, in {listed}. "
        "Look for NaN/Inf in the training data (np.isfinite(x).all()); "
        "keras.callbacks.TerminateOnNaN() stops fit at the first NaN loss.",
        RuntimeWarning, stacklevel=2)
    return found
