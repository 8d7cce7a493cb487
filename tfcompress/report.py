"""`compare`: one table of size, sparsity, speed and quality across compression stages.

Each row is one stage of the same model: the dense Keras model, the pruned
one, a quantization-aware one, the exported `.tflite` flatbuffer, the
SavedModel. Every row is measured the same way on the same labelled data:

- `parameters`, `non-zero parameters`, `sparsity`: the model's own weights
  (what tfcompress wrappers add, such as masks, quantizer ranges and step
  counters, is not counted); non-zeros from the weights the model computes
  with, so a model that is still pruning counts `weight * mask`. A `.tflite`
  row counts the constant weight tensors of the flatbuffer (BatchNormalization
  folded into the convolution, int8 values as stored).
- `bytes`, `gzip bytes`: the file as shipped. A Keras model object is saved to
  a temporary `.keras` file first, with pruning wrappers stripped and without
  optimizer state; a file or directory is measured as it is.
- `TFLite bytes`: the flatbuffer size, on `.tflite` rows only.
- `latency ms (batch 1)`: the median of one-sample inferences: LiteRT
  `invoke` on one thread for `.tflite`, `model(x[:1], training=False)` traced
  once with `tf.function` for Keras, the `serving_default` signature for a
  SavedModel.
- the metric, on the given data: the model's compiled metric, else one that
  fits its output (accuracy for classes, AUC for one 0/1 output, MSE for
  regression), or the one asked for.

```python
import keras
import tfcompress as tfc
from tfcompress import examples, report

(x, y), _, (x_test, y_test) = examples.digits()
dense = examples.digits_cnn()
dense.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
dense.fit(x, y, epochs=3, verbose=0)
flat = tfc.export.to_tflite(dense, mode="int8", representative_data=x[:200])
table = report.compare({"dense": dense, "int8.tflite": flat}, (x_test, y_test))
print(report.to_markdown(table))
```
"""

import contextlib
import gzip
import importlib
import os
import tempfile
import zipfile

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tfcompress.core import techniques
from tfcompress.export import census, finite, metrics, signature
from tfcompress.export import data as data_lib
from tfcompress.export.artifact import open_artifact
from tfcompress.export.verify import (
    directory_size, keras_outputs, median_ms, SavedModelRunner, TFLiteRunner,
)

COLUMNS = (
    "parameters", "non-zero parameters", "sparsity", "bytes", "gzip bytes",
    "TFLite bytes", "latency ms (batch 1)",
)


class UnsafeModelError(ValueError):
    """A Keras file that holds Python code (e.g. a `Lambda` layer), refused in safe mode.

    `path` is the file. Raised by `compare` (and `load_model`) when
    `safe_mode=True`; load it with `safe_mode=False` only if you trust it.

    Example:

    ```python
    from tfcompress import report
    try:
        report.load_model("model_with_lambda.keras")
    except report.UnsafeModelError as error:
        print(error.path)
    except FileNotFoundError:
        pass
    ```
    """

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def load_model(path, safe_mode=True, compile=False):
    """Loads a `.keras` (or legacy `.h5`) model, uncompiled unless `compile=True` (then with
    the loss and optimizer it was saved with), in Keras safe mode by default.

    tfcompress's classes are registered on import, so a model saved while
    pruning or quantization-aware loads as it was saved.

    Raises:
        FileNotFoundError: no file at `path`.
        UnsafeModelError: the file runs Python code on load (a `Lambda`
            layer) and `safe_mode` is True.

    Example:

    ```python
    import keras
    from tfcompress import report
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save("/tmp/m.keras")
    model = report.load_model("/tmp/m.keras")
    ```
    """
    path = os.fspath(path)
    _check_keras_file(path)
    import tfcompress  # noqa: F401  (registers the wrapper classes with Keras)

    _import_layer_libraries(path)

    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except ValueError as error:
        if safe_mode and "safe_mode" in str(error):
            raise UnsafeModelError(path, (
                f"'{path}' holds Python code (a Lambda layer) that would run "
                "when it loads, so safe mode refuses it. Pass safe_mode=False "
                "only if you trust where the file came from."
            )) from None
        raise


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Layer libraries whose classes a saved model may name. Keras imports a saved class's
#: module by itself only for keras, keras_hub, keras_cv and keras_nlp; a keras-rs layer
#: (FeatureCross, DotInteraction) is found only once keras_rs is imported.
LAYER_LIBRARIES = ("keras_rs", "keras_hub", "keras_cv", "keras_nlp")


def _import_layer_libraries(path):
    """Imports the installed `LAYER_LIBRARIES` that the `.keras` file at `path` names."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode("utf-8", "replace")
    for name in LAYER_LIBRARIES:
        if f'"{name}.' in config or f'"{name}>' in config:
            try:
                importlib.import_module(name)
            except ImportError:
                raise ValueError(
                    f"'{path}' holds layers from {name}, which is not installed here: "
                    f"`pip install {name.replace('_', '-')}`, then load it again.") from None


def _check_keras_file(path):
    """Names what is wrong with `path` when it cannot be a Keras model file."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"'{path}' is a SavedModel directory, not a Keras model file; Keras 3 "
                "cannot load a SavedModel back as a model. Give the .keras file it was "
                "exported from (model.save('model.keras')), or serve the SavedModel as "
                "it is (keras.layers.TFSMLayer reads it for inference).")
        raise ValueError(f"'{path}' is a directory, not a Keras model file (.keras or .h5).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at '{path}'.")
    with open(path, "rb") as handle:
        head = handle.read(8)
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        if head != _HDF5_SIGNATURE:
            raise ValueError(
                f"'{path}' exists but is not a valid HDF5 (.h5) model file (no HDF5 "
                "signature: truncated, or another format). Re-save the model, "
                "preferably as model.save('model.keras').")
        return
    if not zipfile.is_zipfile(path):
        kind = "a TFLite flatbuffer" if head[4:8] == b"TFL3" else (
            "an HDF5 file (rename it to .h5)" if head == _HDF5_SIGNATURE else
            "not a zip archive: truncated, or another format")
        raise ValueError(
            f"'{path}' exists but is not a valid .keras file ({kind}). A .keras file "
            "is the zip archive that model.save('model.keras') writes; save the model "
            "again.")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(
                f"'{path}' is a zip archive but not a Keras model (no config.json "
                "inside); a .keras file is what model.save('model.keras') writes.")


def compare(models, data, metric=None, *, output=None, safe_mode=True,
            max_samples=None, latency_runs=100, num_threads=1):
    """Measures every model in `models` on `data`; returns a `pandas.DataFrame`, one row each.

    Args:
        models: a dict `{row name: model}`, in the order the rows should
            appear. A model is a `keras.Model` (dense, pruning, pruned and
            stripped, or quantization-aware), a `.keras` / `.h5` file, a
            `.tflite` file or its bytes (e.g. what `export.to_tflite`
            returns), or a SavedModel directory (e.g. from
            `export.to_saved_model`).
        data: labelled samples, `(x, y)` with `x` an array, or a dict
            `{input name: array}` for multi-input models; or a finite
            `tf.data.Dataset` of `(x, y)` elements, batched or not. `y` holds
            class ids or one-hot rows, 0/1 for one sigmoid output, or targets
            for regression; for several outputs, a dict keyed by output name
            or a list in output order (else one array for the scored output).
        metric: None (default) takes the first Keras model's compiled metric,
            else chooses from the output and labels: `"accuracy"` for classes,
            `"auc"` for one 0/1 output, the compiled loss or `"mse"` for
            regression (see `tfcompress.export.metrics`). Or ask for one:
            `"accuracy"` (top-1 for several classes; one output is read as a
            probability with a 0.5 threshold, or as a logit when its values
            leave [0, 1]), `"auc"` (one-vs-rest, averaged, for several
            classes), or any Keras metric name or instance, e.g. `"mse"` or
            `keras.metrics.Precision()`. The column is named after it. A
            metric that cannot score the output (accuracy on a regression)
            is an error.
        output: the output to score, by name, for models with several
            outputs (default: the only output, else the first Keras model's
            first output).
        safe_mode: load `.keras` files in Keras safe mode (a `Lambda` layer is
            refused with `UnsafeModelError`). Set False only for files you trust.
        max_samples: score at most this many samples (default: all).
        latency_runs: how many batch-1 inferences are timed for the median.
        num_threads: LiteRT interpreter threads.

    Returns:
        A DataFrame indexed by row name (index name `"model"`) with the
        columns `COLUMNS`, the columns registered techniques add for their
        Keras rows (`tfcompress.core.techniques`), and the metric. Integer
        columns are `int64`, `TFLite bytes` is nullable `Int64` (`<NA>` on
        other rows). Render it with `to_markdown(frame)` (pandas'
        `DataFrame.to_markdown` with thousands separators and fixed decimals).

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress import examples, report

    (x, y), _, (x_test, y_test) = examples.digits()
    dense = examples.digits_cnn()
    dense.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dense.fit(x, y, epochs=2, verbose=0)
    flat = tfc.export.to_tflite(dense, mode="int8", representative_data=x[:200])
    table = report.compare({"dense": dense, "int8.tflite": flat}, (x_test, y_test))
    print(report.to_markdown(table))
    ```
    """
    if not isinstance(models, dict) or not models:
        got = "an empty dict" if isinstance(models, dict) else type(models).__name__
        raise TypeError(
            "compare() takes a non-empty dict {row name: model}, e.g. "
            f"{{'dense': model, 'int8': 'model.tflite'}}; got {got}."
        )
    rows, names, measured_rows, extra = [], [], [], []
    for name, model in models.items():
        with _row_errors(name):
            measured_rows.append((name, model, _measure(
                model, data, safe_mode, max_samples, latency_runs, num_threads)))
    reference, column, score, compiled = output, None, None, None
    for name, model, measured in measured_rows:
        with _row_errors(name):
            is_keras = measured.pop("keras")
            names_out = measured.pop("outputs")
            chosen = _pick(names_out, reference, output is not None, is_keras)
            outputs = measured.pop("scored")[chosen]
            labels = metrics.labels_for(measured.pop("labels"), chosen, names_out)
            if score is None:  # the first row decides the metric, for every row
                compiled = _compiled(models, chosen)
                wanted = metric if metric is not None else metrics.choose(
                    outputs, labels, compiled)
                metrics.check(wanted, outputs, labels, chosen)
                column, score = metrics.scorer(wanted)
            reference = reference or chosen
            measured[column] = score(outputs, labels)
            extra.extend(c for c in measured.pop("columns") if c not in extra)
        rows.append(measured)
        names.append(str(name))
    frame = pd.DataFrame.from_records(rows, index=pd.Index(names, name="model"))
    frame = frame[list(COLUMNS) + extra + [column]]
    for name in extra:  # a technique's counts stay integers beside rows that lack them
        values = frame[name].dropna()
        if len(values) and all(float(v).is_integer() for v in values):
            frame[name] = frame[name].astype("Int64")
    return frame.astype({
        "parameters": "int64", "non-zero parameters": "int64", "bytes": "int64",
        "gzip bytes": "int64", "TFLite bytes": "Int64", "sparsity": "float64",
        "latency ms (batch 1)": "float64", column: "float64",
    })


def to_markdown(frame, float_digits=4):
    """Renders a `compare` table (or any DataFrame) as a markdown table.

    Integers get thousands separators, floats `float_digits` decimals, and
    missing cells (`TFLite bytes` on non-TFLite rows) show as `–`; `|` in
    names and cells is escaped. The cells are formatted here, then laid out
    by `DataFrame.to_markdown` (`tabulate`, pipe format: the index column,
    headed by the index name, left-aligned, the others right-aligned; cells
    padded to their column's width).

    Example:

    ```python
    import pandas as pd
    from tfcompress import report
    frame = pd.DataFrame({"bytes": [1200, 300]}, index=pd.Index(["a", "b"], name="model"))
    print(report.to_markdown(frame))   # | model   |   bytes | ... | a       |   1,200 |
    ```
    """
    def cell(value):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return str(bool(value))
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        if isinstance(value, (float, np.floating)):
            return f"{float(value):,.{float_digits}f}"
        return str(value).replace("|", "\\|")

    text = pd.DataFrame(
        [[cell(v) for v in values] for values in frame.itertuples(index=False, name=None)],
        columns=[str(c).replace("|", "\\|") for c in frame.columns],
        index=pd.Index([cell(i) for i in frame.index],
                       name=str(frame.index.name or "").replace("|", "\\|")))
    # disable_numparse: the cells are final text ("0.5000" must not become "0.5")
    return text.to_markdown(tablefmt="pipe", disable_numparse=True,
                            colalign=("left",) + ("right",) * len(frame.columns))


# -- measuring one row ---------------------------------------------------------

def _measure(model, data, safe_mode, max_samples, latency_runs, num_threads):
    if isinstance(model, keras.Model):
        return _keras_row(model, None, data, max_samples, latency_runs)
    kind, path, payload = open_artifact(
        model, "each model must be a keras.Model, a .keras/.h5 file, a .tflite file or its "
        "bytes, or a SavedModel directory", keras_files=True)
    if kind == "keras":
        return _keras_row(load_model(path, safe_mode), path, data, max_samples, latency_runs)
    if kind == "saved_model":
        return _saved_model_row(path, data, max_samples, latency_runs)
    return _tflite_row(payload, data, max_samples, latency_runs, num_threads)


def _keras_row(model, path, data, max_samples, latency_runs):
    columns = techniques.columns(model)  # before strip: a technique reads its wrappers
    model = signature.prepare(model)  # checks it is a graph model; strips every technique
    params, nonzero = _keras_weights(model)
    size, packed = _file_sizes(path) if path else _keras_file_sizes(model)
    inputs = signature.inputs(model)
    features, labels = _features(data, inputs, max_samples)
    outputs = keras_outputs(model, features)
    sample = signature.to_model_inputs(model, {n: a[:1] for n, a in features.items()})
    # A traced call, as Keras' predict runs it: eager dispatch would time Python.
    traced = tf.function(lambda features: model(features, training=False))
    latency = median_ms(lambda: traced(sample), latency_runs)
    return {**_row(params, nonzero, size, packed, None, latency, outputs, labels, keras=True),
            **columns, "columns": list(columns)}


def _tflite_row(flatbuffer, data, max_samples, latency_runs, num_threads):
    finite.check_flatbuffer(flatbuffer)  # a NaN scale can crash the interpreter
    params, nonzero = _tflite_weights(flatbuffer)
    inputs = _tflite_inputs(flatbuffer)
    run = TFLiteRunner(flatbuffer, inputs, num_threads)
    features, labels = _features(data, inputs, max_samples)
    outputs = run(features)
    latency = run.latency({n: a[:1] for n, a in features.items()}, latency_runs)
    size = len(flatbuffer)
    return _row(params, nonzero, size, len(gzip.compress(flatbuffer, 9)), size, latency,
                outputs, labels)


def _saved_model_row(path, data, max_samples, latency_runs):
    serving = tf.saved_model.load(path).signatures.get("serving_default")
    if serving is None:
        raise ValueError(
            f"The SavedModel at '{path}' has no serving_default signature; export "
            "it with tfcompress.export.to_saved_model."
        )
    specs = serving.structured_input_signature[1]
    inputs = [signature.InputInfo(name, tuple(spec.shape), spec.dtype.name)
              for name, spec in specs.items()]
    run = SavedModelRunner(path, inputs)
    added = {id(v) for v in getattr(run.loaded, "tfcompress_added_variables", [])}
    variables = [v for v in run.loaded.variables if id(v) not in added]
    params, nonzero = _count([v.numpy() for v in variables])
    features, labels = _features(data, inputs, max_samples)
    outputs = run(features)
    latency = run.latency({n: a[:1] for n, a in features.items()}, latency_runs)
    size, packed = directory_size(path)
    return _row(params, nonzero, size, packed, None, latency, outputs, labels)


def _row(params, nonzero, size, packed, tflite_size, latency, outputs, labels, keras=False):
    return {
        "parameters": params, "non-zero parameters": nonzero,
        "sparsity": 1.0 - nonzero / params if params else float("nan"),
        "bytes": size, "gzip bytes": packed,
        "TFLite bytes": pd.NA if tflite_size is None else tflite_size,
        "latency ms (batch 1)": latency,
        "outputs": list(outputs), "scored": outputs, "labels": labels, "keras": keras,
        "columns": [],
    }


def _features(data, inputs, max_samples):
    features, labels = data_lib.features(data, inputs, "data", max_samples=max_samples,
                                         with_labels=True)
    if labels is None:
        raise ValueError(
            "data has no labels, so the metric cannot be computed. Pass (x, y), or "
            "a tf.data.Dataset of (x, y) elements."
        )
    return features, labels


# -- weights -------------------------------------------------------------------

def _keras_weights(model):
    """(parameters, non-zeros) of the model's own weights, as `strip` would leave them."""
    from tfcompress.core.strip import added_variables, stripped_values

    added, effective = added_variables(model), stripped_values(model)
    seen, values = set(), []
    for variable in model.weights:
        if id(variable) in added or id(variable) in seen:
            continue
        seen.add(id(variable))
        values.append(keras.ops.convert_to_numpy(effective.get(id(variable), variable)))
    return _count(values)


def _tflite_weights(flatbuffer):
    """(parameters, non-zeros) over the flatbuffer's constant weight tensors.

    The constants that ops read (as in `census.weights`), less the
    unquantized integer ones, which are shapes and indices. A sparse-encoded
    tensor counts its dense size and its stored non-zero values.
    """
    interp = census.plain_interpreter(flatbuffer)
    produced, consumed = set(), set()
    for op in interp._get_ops_details():
        produced.update(int(i) for i in op["outputs"])
        consumed.update(int(i) for i in op["inputs"] if i >= 0)
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    interp.allocate_tensors()
    params = nonzero = 0
    for index in sorted(consumed - produced - graph_inputs):
        detail = interp._get_tensor_details(index, 0)
        dtype = np.dtype(detail["dtype"])
        quantization = detail["quantization_parameters"]
        if dtype.kind in "iub" and not len(quantization["scales"]):
            continue
        stored = interp.get_tensor(index)
        zero_points = np.asarray(quantization["zero_points"])
        zero = zero_points.flat[0] if zero_points.size else 0
        if np.any(zero_points != zero) and stored.shape == tuple(detail["shape"]):
            shape = [1] * stored.ndim  # per-channel zero points, along one axis
            shape[quantization["quantized_dimension"]] = -1
            zero = zero_points.reshape(shape)
        params += int(np.prod(detail["shape"]))
        nonzero += int(np.count_nonzero(stored != zero))
    return params, nonzero


def _tflite_inputs(flatbuffer):
    """The flatbuffer's serving inputs as `signature.InputInfo`, quantized ones fed as float."""
    interp = census.interpreter(flatbuffer)
    signatures = interp.get_signature_list()
    if not signatures:
        raise ValueError(
            "The flatbuffer has no signature, so its inputs cannot be matched by "
            "name; export it with tfcompress.export.to_tflite."
        )
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    infos = []
    for name, detail in interp.get_signature_runner(key).get_input_details().items():
        dtype = np.dtype(detail["dtype"]).name
        scale, _ = detail["quantization"]
        if scale and dtype in ("int8", "uint8", "int16"):
            dtype = "float32"  # the runner quantizes float samples itself
        shape = tuple(None if int(d) < 0 else int(d) for d in detail["shape_signature"])
        infos.append(signature.InputInfo(name, (None,) + shape[1:], dtype))
    return infos


def _count(arrays):
    params = sum(int(np.size(a)) for a in arrays)
    nonzero = sum(int(np.count_nonzero(a)) for a in arrays)
    return params, nonzero


# -- sizes ---------------------------------------------------------------------

def _file_sizes(path):
    with open(path, "rb") as handle:
        raw = handle.read()
    return len(raw), len(gzip.compress(raw, 9))


def _keras_file_sizes(model):
    """The `.keras` file of `model` without optimizer state."""
    if getattr(model, "optimizer", None) is not None:
        from tfcompress.core import copy_layer, map_layers

        model = map_layers(model, copy_layer)  # an uncompiled copy
    with tempfile.TemporaryDirectory(prefix="tfcompress-report-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return _file_sizes(path)


# -- metrics -------------------------------------------------------------------

def _pick(names, wanted, explicit, is_keras):
    """The output to score: `wanted` if present, else the only one, else a Keras model's first."""
    if wanted in names:
        return wanted
    if explicit:
        raise ValueError(f"output='{wanted}' is not among the model's outputs {sorted(names)}.")
    if len(names) == 1 or (wanted is None and is_keras):
        return names[0]
    raise ValueError(
        f"the model has several outputs {sorted(names)}"
        + (f" and none is named '{wanted}' like the first Keras model's" if wanted else "")
        + "; pass output=<name> to say which one the metric scores."
    )


def _compiled(models, output_name):
    """The compiled metric and loss of the first Keras model (object or `.keras` file) in `models`."""
    for model in models.values():
        if isinstance(model, keras.Model):
            return metrics.compiled_metric(model, output_name=output_name)
        if isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".keras"):
            return metrics.compiled_metric(path=model, output_name=output_name)
    return None


@contextlib.contextmanager
def _row_errors(name):
    """Re-raises an error with the row's name in front (same type where it allows)."""
    try:
        yield
    except UnsafeModelError:
        raise
    except Exception as error:
        message = f"row '{name}': {error}"
        try:
            wrapped = type(error)(message)
        except Exception:
            wrapped = RuntimeError(message)
        raise wrapped from error
