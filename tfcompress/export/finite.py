"""Nothing non-finite leaves: NaN/Inf checks for models before export and for flatbuffers.

One bad training row (a NaN pixel) turns weights or learned quantization
ranges into NaN without an error. Exported as they are, such values give a
model that answers NaN, or a flatbuffer with NaN quantization scales, which
the LiteRT interpreter can crash on (a segmentation fault: an app crash on
the phone). `check_model` runs before every export; `check_flatbuffer`
before `verify` runs a file it is given.
"""

import numpy as np

_FIX = ("Find the bad samples (e.g. `np.isfinite(x).all()` on the training data; "
        "`keras.callbacks.TerminateOnNaN()` stops fit at the first NaN loss), then "
        "retrain, or restore weights saved before it (e.g. with "
        "keras.callbacks.BackupAndRestore or ModelCheckpoint).")


def nonfinite_variables(model):
    """`[(variable path, count of NaN/Inf values)]` over every float variable of `model`.

    Weights, pruning masks, quantization ranges, cluster centroids: every
    variable the model holds, trainable or not.

    Example:

    ```python
    import keras
    from tfcompress.export import finite
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    finite.nonfinite_variables(model)   # []
    ```
    """
    found, seen = [], set()
    for variable in model.variables:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        value = np.asarray(variable.numpy())
        if value.dtype.kind != "f":
            continue
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            found.append((variable.path, bad))
    return found


def check_model(model, action="export"):
    """Raises ValueError naming each layer variable that holds NaN or Inf.

    Example:

    ```python
    import keras
    import numpy as np
    from tfcompress.export import finite
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].kernel.assign(np.full((3, 2), np.nan, "float32"))
    try:
        finite.check_model(model)
    except ValueError as error:
        print(error)   # ... 'dense/kernel' (6 NaN/Inf values) ...
    ```
    """
    from tfcompress.core import nonfinite

    nonfinite.warn_skipped(model)
    found = nonfinite_variables(model)
    if not found:
        return
    listed = ", ".join(f"'{path}' ({count:,} NaN/Inf value{'s' * (count != 1)})"
                       for path, count in found[:8])
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    raise ValueError(
        f"Cannot {action} model '{model.name}': its variables hold non-finite values, "
        f"so it would compute NaN (and NaN quantization ranges crash the LiteRT "
        f"interpreter): {listed}{more}. Nothing was written. {_FIX}")


def check_flatbuffer(flatbuffer, label="<flatbuffer>"):
    """Raises ValueError for a flatbuffer whose quantization scales or zero points are unusable.

    Every quantized tensor is checked: a scale that is NaN, Inf, zero or
    negative, or a zero point that is not finite, makes LiteRT compute
    garbage or crash, so the file is reported instead of run. Reading the
    parameters builds an interpreter without allocating or running it.

    Example:

    ```python
    import keras
    from tfcompress import export
    from tfcompress.export import finite
    flat = export.to_tflite(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    finite.check_flatbuffer(flat)   # fine
    ```
    """
    from tfcompress.export import census

    interp = census.interpreter(flatbuffer)
    bad = []
    for detail in interp.get_tensor_details():
        params = detail.get("quantization_parameters") or {}
        scales = np.asarray(params.get("scales", []), dtype=np.float64)
        zero_points = np.asarray(params.get("zero_points", []))
        if not scales.size:
            continue
        problems = []
        if not np.all(np.isfinite(scales)):
            problems.append("non-finite scale")
        elif np.any(scales <= 0):
            problems.append("zero or negative scale")
        if zero_points.size and zero_points.dtype.kind == "f" and not np.all(
                np.isfinite(zero_points)):
            problems.append("non-finite zero point")
        if problems:
            bad.append(f"'{detail['name']}' ({', '.join(problems)})")
    if bad:
        more = f" and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise ValueError(
            f"'{label}' has unusable quantization parameters, so LiteRT would compute "
            f"garbage or crash running it: {', '.join(bad[:6])}{more}. It was not run. "
            "This comes from NaN/Inf in the model or in the calibration data; export "
            "again with tfcompress (it refuses non-finite models and data). " + _FIX)


def check_samples(arrays, role="representative_data"):
    """Raises ValueError naming the samples of `{input name: array}` that hold NaN/Inf.

    Calibration samples with NaN/Inf would make the calibrated ranges, and so
    the int8 scales, NaN.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import finite
    finite.check_samples({"image": np.zeros((4, 8, 8, 1), "float32")})   # fine
    ```
    """
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        if rows.size:
            listed = ", ".join(map(str, rows[:5])) + (", ..." if rows.size > 5 else "")
            raise ValueError(
                f"{role} input '{name}' holds NaN/Inf values in "
                f"{rows.size} sample{'s' * (rows.size != 1)} (sample {listed}); they "
                "would make the calibrated ranges, and so the int8 scales, NaN, which "
                "crashes the LiteRT interpreter. Nothing was written. Drop those "
                "samples, e.g. x[np.isfinite(x).reshape(len(x), -1).all(axis=1)].")
