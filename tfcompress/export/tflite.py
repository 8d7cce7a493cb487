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

import collections
import os
import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from tfcompress.export import atomic, census, data, finite, signature

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
            model gives int8 without it (given, it calibrates only the tensors
            QAT left without ranges, when the file has any). A numpy array, a dict
            `{input name: array}` (multi-input models), or a `tf.data.Dataset`
            (batched or not, with or without labels). Only `max_samples`
            samples are read.
        io_type: `"float"` keeps float inputs/outputs; `"int8"` / `"uint8"`
            makes the float inputs and outputs of an `"int8"` model quantized
            too (integer inputs such as ids stay as they are).
        sparse: also encode pruned (mostly zero) weights sparsely
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`). The result is loaded
            in LiteRT's default interpreter (XNNPack on) before it is
            returned: XNNPack cannot run sparse-encoded weights in int8
            (`"int8"`, `"dynamic"`) FULLY_CONNECTED layers, so such an export
            is a `ValueError` that names the ops, and writes nothing. Float32
            and float16 sparse exports load, and a model pruned with
            `pruning_policy=tfc.pruning.PruneForLatencyOnXNNPack()` runs
            faster with them on ARM CPUs (XNNPack's sparse inference; on
            x86 CPUs with AVX XNNPack keeps its dense kernels).
        overwrite: replace an existing file at `path`.
        allow_tf_ops: allow TensorFlow ops that have no TFLite builtin, as TF
            Select (Flex) ops; the app then needs the Flex delegate.
        max_samples: at most this many calibration samples are used.

    Raises:
        ValueError: the model's variables (weights, masks, quantization
            ranges) or the calibration samples hold NaN/Inf; the flatbuffer
            would compute NaN or crash LiteRT, so nothing is written.

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
        path = atomic.check_target(path, overwrite)

    model = signature.prepare(model)
    finite.check_model(model, "export")
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
        finite.check_samples(calibration, "representative_data")
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

        def convert(samples):
            converter = tf.lite.TFLiteConverter.from_saved_model(
                saved, signature_keys=["serving_default"])
            _configure(converter, mode, samples, io_type, sparse, allow_tf_ops)
            return _convert(converter, mode, allow_tf_ops)

        # A quantization-aware model holds its ranges: samples only calibrate what QAT left
        # float (a composite layer's own ops). The converter's calibrator aborts the whole
        # process on some QAT graphs (a keras-hub TransformerEncoder's), so it runs only
        # where a first conversion without it leaves float compute.
        qat_first = qat and mode == "int8" and calibration is not None
        flatbuffer = convert(None if qat_first else calibration)
        if qat_first and _float_ops(flatbuffer):
            flatbuffer = convert(calibration)

    finite.check_flatbuffer(flatbuffer, path or "<flatbuffer>")  # before LiteRT runs it
    if sparse:
        _check_sparse_loads(flatbuffer, mode, model)
    if qat and mode == "int8":
        _warn_float_islands(flatbuffer)
    if path is not None:
        atomic.write_bytes(path, flatbuffer, overwrite)
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


_NOT_DELEGATED = re.compile(r"failed to delegate (\w+) node")
_NOT_PREPARED = re.compile(r"Node number \d+ \((\w+)\) failed to prepare")
_QUANTIZED_WEIGHTS = {
    "int8": "in an int8 model",
    "dynamic": "with int8 weights (mode='dynamic')",
    "int16x8": "in an int16x8 model",
}


def _check_sparse_loads(flatbuffer, mode, model):
    """A sparse export must load where it is deployed: LiteRT's default interpreter."""
    if any(op.name.startswith("Flex") for op in census.ops(flatbuffer)):
        return  # TF Select ops: the Python interpreter cannot load them at all
    message = _first_run_error(flatbuffer)
    if message is None:
        return
    xnnpack = sorted(set(_NOT_DELEGATED.findall(message)))
    builtin = sorted(set(_NOT_PREPARED.findall(message)) - {"TfLiteXNNPackDelegate"})
    blocked = _sparse_readers(flatbuffer, model, xnnpack + builtin)
    weights = _QUANTIZED_WEIGHTS.get(mode, f"mode={mode!r}")
    if xnnpack:
        problem = (
            f"LiteRT's default interpreter cannot run it: its XNNPack delegate "
            f"fails on {blocked} reading sparse-encoded weights {weights}, "
            "which XNNPack supports in float32 and float16 models only")
    else:
        problem = (f"LiteRT cannot run it, even without XNNPack: {blocked} fails "
                   "in the sparse-encoded file (the converter's sparsity pass leaves it "
                   "in a form LiteRT's kernels reject)")
    raise ValueError(
        f"to_tflite(mode={mode!r}, sparse=True) converted the model, but {problem} "
        f"(LiteRT: {message.strip()!r}). No file was written. Either export with "
        "sparse=False: the same zeros, stored dense; the file loads everywhere and "
        "still compresses well with gzip. Or, for a model that is faster as well as "
        "smaller, prune it with pruning_policy=tfc.pruning.PruneForLatencyOnXNNPack() "
        "and export it with mode='float' or mode='float16' and sparse=True, which "
        "XNNPack runs with its sparse kernels on ARM CPUs (x86 CPUs with AVX run its "
        "dense kernels)."
    )


def _first_run_error(flatbuffer):
    """LiteRT's error on one inference in the default interpreter, or None."""
    interp = census.interpreter(flatbuffer)
    try:
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        return " ".join(str(error).split())
    for detail in interp.get_input_details():
        if detail["dtype"] == np.object_:
            return None  # string inputs: no neutral value to feed
        interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    try:
        interp.invoke()  # LiteRT applies the XNNPack delegate here, lazily
    except (RuntimeError, ValueError) as error:
        return " ".join(str(error).split())
    return None


def _sparse_readers(flatbuffer, model, op_names):
    """'FULLY_CONNECTED ×2 (layers 'dense', 'logits')': the ops that read sparse weights."""
    from ai_edge_litert.interpreter import OpResolverType

    interp = census.interpreter(
        flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    details = interp._get_ops_details()
    densified = {int(t) for op in details if op["op_name"] == "DENSIFY" for t in op["outputs"]}

    def sparse(index):
        return index in densified or bool(
            interp._get_tensor_details(index, 0).get("sparsity_parameters"))

    kernels = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if weight.path.endswith("kernel") and len(shape) in (2, 4):
                # TFLite stores Dense kernels as (out, in), Conv2D as (out, h, w, in).
                stored = (shape[1], shape[0]) if len(shape) == 2 else shape[3:] + shape[:3]
                kernels.setdefault(stored, []).append(layer.name)
    counts, layers = collections.Counter(), collections.defaultdict(set)
    for op in details:
        reads = [int(t) for t in op["inputs"] if t >= 0 and sparse(int(t))]
        if op["op_name"] in op_names and reads:
            shape = tuple(int(d) for d in interp._get_tensor_details(reads[0], 0)["shape"])
            counts[op["op_name"]] += 1
            layers[op["op_name"]].update(kernels.get(shape, []))
    parts = []
    for name in op_names:
        parts.append(name + (f" ×{counts[name]}" if counts[name] > 1 else "")
                     + (f" (layers {', '.join(map(repr, sorted(layers[name])))})"
                        if layers[name] else ""))
    return " and ".join(parts) or "an op"


def _float_ops(flatbuffer):
    return sorted({op.name for op in census.ops(flatbuffer) if op.kind in ("float", "hybrid")})


def _warn_float_islands(flatbuffer):
    floats = _float_ops(flatbuffer)
    if floats:
        warnings.warn(
            f"The quantization-aware model converted, but {floats} still run in "
            "float: their inputs carry no fake-quant ranges. Quantize the "
            "activations that feed them, or pass representative_data to "
            "calibrate the rest.",
            stacklevel=3,
        )
