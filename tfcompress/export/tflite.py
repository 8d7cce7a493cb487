"""`to_tflite`: a compressed Keras 3 model as a TFLite flatbuffer, builtins only.

The path is always the same: strip pruning wrappers, write the serving
SavedModel (see `signature`), convert it with
`tf.lite.TFLiteConverter.from_saved_model`. Going through a SavedModel we
wrote ourselves avoids `TFLiteConverter.from_keras_model`, which silently
falls back to a legacy path on Keras 3 models (dict-input models then fail
with "NoneType is not callable").

Unlike Keras's own `model.export(format="litert")`, the op set is the TFLite
builtins only: an op TFLite cannot run is an error that names it, not a Flex
op that fails later on the device. `allow_tf_ops=True` opts in to TF Select.
"""

import os
import re
import tempfile
import warnings

import tensorflow as tf

from tfcompress.export import _atomic, census, data, signature

MODES = ("float", "dynamic", "float16", "int8", "int16x8")
IO_TYPES = ("float", "int8", "uint8")
CALIBRATED = ("int8", "int16x8")


def to_tflite(model, path=None, mode="float", representative_data=None, io_type="float",
              sparse=False, overwrite=False, *, allow_tf_ops=False, max_samples=200):
    """Converts `model` to a TFLite flatbuffer; returns its bytes (and writes `path`).

    Pruning wrappers are stripped first (their zeros are baked into the
    weights); quantization-aware layers are kept, since their fake-quant ops
    hold the int8 ranges.

    Args:
        model: a Sequential or functional Keras 3 model, compressed or not.
        path: optional file to write. The write is atomic: a failed or killed
            export leaves nothing at `path`.
        mode: `"float"` (float32), `"dynamic"` (int8 weights, float
            activations), `"float16"` (float16 weights), `"int8"` (full
            integer: int8 weights and activations) or `"int16x8"` (int16
            activations, int8 weights).
        representative_data: samples to calibrate activation ranges, needed by
            `"int8"` and `"int16x8"`, except that a quantization-aware-trained
            model gives int8 without it. A numpy array, a dict
            `{input name: array}` (multi-input models), or a `tf.data.Dataset`
            (batched or not, with or without labels). Only `max_samples`
            samples are read.
        io_type: `"float"` keeps float inputs/outputs; `"int8"` / `"uint8"`
            makes the float inputs and outputs of an `"int8"` model quantized
            too (integer inputs such as ids stay as they are).
        sparse: also encode pruned (mostly zero) weights sparsely
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
        overwrite: replace an existing file at `path`.
        allow_tf_ops: allow TensorFlow ops that have no TFLite builtin, as TF
            Select (Flex) ops; the app then needs the Flex delegate.
        max_samples: at most this many calibration samples are used.

    Returns:
        The flatbuffer, as `bytes`.

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    from tfcompress import examples

    (x, y), _, _ = examples.digits()
    model = examples.digits_cnn()
    flat = tfc.export.to_tflite(model, "/tmp/digits.tflite", mode="int8",
                                representative_data=x[:200], overwrite=True)
    ```
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode={mode!r}; use one of {list(MODES)}.")
    if io_type not in IO_TYPES:
        raise ValueError(f"Unknown io_type={io_type!r}; use one of {list(IO_TYPES)}.")
    if io_type != "float" and mode != "int8":
        raise ValueError(
            f"io_type={io_type!r} quantizes the model's inputs and outputs, which "
            f"only an integer model has; use it with mode='int8' (got mode={mode!r})."
        )
    if path is not None:
        path = _atomic.check_target(path, overwrite)

    model = signature.prepare(model)
    inputs = signature.inputs(model)
    qat = signature.is_quantization_aware(model)
    calibration = None
    if representative_data is not None:
        if mode not in CALIBRATED:
            raise ValueError(
                f"mode={mode!r} does not use representative_data (only 'int8' and "
                "'int16x8' calibrate activation ranges); drop it, or pick one of "
                "those modes."
            )
        calibration = data.features(representative_data, inputs, "representative_data",
                                    max_samples=max_samples)
    elif mode in CALIBRATED and not (qat and mode == "int8"):
        example = ("x_train[:200]" if len(inputs) == 1
                   else "{" + ", ".join(f"'{i.name}': ..." for i in inputs) + "}")
        raise ValueError(
            f"mode={mode!r} quantizes activations, so it needs their ranges, but "
            f"'{model.name}' was not trained with quantization-aware training. Pass "
            f"a few hundred training samples, e.g. representative_data={example}, "
            "or use mode='dynamic' (int8 weights, float activations, no data "
            "needed), or train the model with tfcompress quantization-aware "
            "training first."
        )

    with tempfile.TemporaryDirectory(prefix="tfcompress-export-") as tmp:
        saved = signature.write(model, os.path.join(tmp, "saved_model"))
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved, signature_keys=["serving_default"])
        _configure(converter, mode, calibration, io_type, sparse, allow_tf_ops)
        flatbuffer = _convert(converter, mode, allow_tf_ops)

    if qat and mode == "int8":
        _warn_float_islands(flatbuffer)
    if path is not None:
        _atomic.write_bytes(path, flatbuffer, overwrite)
    return flatbuffer


def _configure(converter, mode, calibration, io_type, sparse, allow_tf_ops):
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    optimizations = [] if mode == "float" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if calibration is not None:
        converter.representative_dataset = lambda: data.samples(calibration)
        builtins = (tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else
                    tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)
    # A QAT model without calibration data keeps TFLITE_BUILTINS: the
    # converter reads the ranges from the fake-quant ops (with the int8-only
    # op set it would insist on a representative dataset).
    converter.target_spec.supported_ops = [builtins] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if allow_tf_ops else [])
    if io_type != "float":
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)


_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]+)@')
_SELECT = re.compile(r"TF Select ops: ([^\n]+)")
_CUSTOM = re.compile(r"Custom ops: ([^\n]+)")
_NEITHER = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_CALIBRATION = re.compile(r"Max and min for dynamic tensors should be recorded during "
                          r"calibration: Failed for tensor (\S+)")


def _convert(converter, mode, allow_tf_ops):
    try:
        with warnings.catch_warnings():
            # The converter calibrates with tf.lite.Interpreter internally.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()
    except Exception as error:
        message = str(error)
        problem = _unsupported_ops(message, allow_tf_ops)
        if problem:
            raise ValueError(problem) from None
        match = _CALIBRATION.search(message)
        if match and mode == "int16x8":
            raise ValueError(
                f"mode='int16x8' could not quantize tensor {match.group(1)}: the "
                "16x8 quantizer handles float inputs only, not integer inputs "
                "such as ids. Use mode='int8' (or 'dynamic') for this model."
            ) from None
        raise


def _unsupported_ops(message, allow_tf_ops):
    select = _names(_SELECT.findall(message))
    custom = _names(_CUSTOM.findall(message))
    if not select and not custom:
        select = sorted(set(_NEITHER.findall(message)))
    if not select and not custom:
        return None
    where = {}
    for op, scope in _LOCATION.findall(message):
        where.setdefault(op, scope)
    def describe(names):
        return ", ".join(f"{n} (in {where[n]})" if n in where else n for n in names)
    lines = []
    if select:
        lines.append(
            f"These TensorFlow ops have no TFLite builtin: {describe(select)}. "
            "Replace them with ops TFLite supports, or pass allow_tf_ops=True to "
            "ship them as TF Select (Flex) ops; the app then needs the Flex "
            "delegate (e.g. 'org.tensorflow:tensorflow-lite-select-tf-ops' on "
            "Android) and the binary grows."
            if not allow_tf_ops else
            f"These TensorFlow ops could not be converted: {describe(select)}."
        )
    if custom:
        lines.append(
            f"These TensorFlow ops have neither a TFLite builtin nor a TF Select "
            f"kernel: {describe(custom)}. allow_tf_ops=True cannot help; rewrite "
            "the layer with supported ops."
        )
    return " ".join(lines)


def _names(found):
    return sorted({name.strip() for line in found for name in line.split(",") if name.strip()})


def _warn_float_islands(flatbuffer):
    floats = sorted({op.name for op in census.ops(flatbuffer)
                     if op.name in census.COMPUTE_OPS and op.kind in ("float", "hybrid")})
    if floats:
        warnings.warn(
            f"The quantization-aware model converted, but {floats} still run in "
            "float: their inputs carry no fake-quant ranges. Quantize the "
            "activations that feed them, or pass representative_data to "
            "calibrate the rest.",
            stacklevel=3,
        )
