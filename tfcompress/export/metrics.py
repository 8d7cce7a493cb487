"""Which metric scores a model, and scoring outputs with it (for `report` and `verify`).

When no metric is asked for, it comes from what the model is:

1. the model's own compiled metric (the first of `compile(metrics=...)`, for
   the output being scored), read from the model or from its `.keras` file;
2. else from its output and labels: `"accuracy"` for class outputs (several
   units, labels that are class ids or one-hot rows), `"auc"` for one unit
   with 0/1 labels (a sigmoid or a logit) and for multi-label 0/1 outputs,
   and for regression the compiled loss when it is a Keras metric too (e.g.
   `"mse"`, `"mae"`), else `"mse"`.

A metric that cannot apply to the output (accuracy or AUC on a regression
output) is an error that names the output and the metrics that fit.

```python
import numpy as np
from tfcompress.export import metrics
outputs, labels = np.eye(3)[[0, 2, 1]], np.array([0, 2, 2])
name = metrics.choose(outputs, labels)            # "accuracy"
column, score = metrics.scorer(name)
value = score(outputs, labels)                    # 2 of 3 right
```
"""

import json
import zipfile

import keras
import numpy as np

CLASSES, BINARY, REGRESSION = "classes", "binary", "regression"
_ACCURACY_NAMES = ("accuracy", "acc")


def kind(outputs, labels):
    """What an output predicts, read from its values and labels: `CLASSES`, `BINARY` or `REGRESSION`.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.kind(np.zeros((4, 3)), np.ones((4, 3)) * 0.5)   # "regression"
    ```
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    units = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    binary_labels = labels.size > 0 and bool(np.all((labels == 0) | (labels == 1)))
    if units > 1 and outputs.ndim == 2:
        if labels.size == len(outputs) and _integral(labels) and labels.min() >= 0 \
                and labels.max() < units:
            return CLASSES
        if labels.shape == outputs.shape and binary_labels:
            return CLASSES if np.all(labels.sum(axis=-1) == 1) else BINARY
        return REGRESSION
    if units == 1 and labels.size == len(outputs) and binary_labels:
        return BINARY
    return REGRESSION


def choose(outputs, labels, compiled=None):
    """The metric for `outputs` against `labels`: `compiled` if given, else one by `kind`.

    Args:
        outputs, labels: numpy arrays for the output being scored.
        compiled: what `compiled_metric` returned for the model (or None).

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.choose(np.random.rand(8, 1), np.array([0, 1] * 4))   # "auc"
    ```
    """
    if compiled is not None and compiled.get("metric") is not None:
        return compiled["metric"]
    found = kind(outputs, labels)
    if found == CLASSES:
        return "accuracy"
    if found == BINARY:
        return "auc"
    loss = (compiled or {}).get("loss")
    if isinstance(loss, str):
        try:
            keras.metrics.get(loss)
            return loss
        except (ValueError, TypeError):
            pass
    return "mse"


def scorer(metric):
    """`(column name, score(outputs, labels) -> float)` for a metric name or Keras metric.

    `"accuracy"` is top-1 for several classes (labels as ids or one-hot rows)
    and a 0.5 threshold for one probability (0 for one logit); `"auc"` is
    one-vs-rest and averaged for several classes; any other name or
    `keras.metrics.Metric` instance is Keras's own.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    column, score = metrics.scorer("mae")
    score(np.zeros((4, 3)), np.ones((4, 3)))   # 1.0
    ```
    """
    if isinstance(metric, str) and metric.lower() in _ACCURACY_NAMES:
        return "accuracy", accuracy
    if isinstance(metric, str) and metric.lower() == "auc":
        return "auc", auc
    try:
        found = keras.metrics.get(metric)
    except (ValueError, TypeError):
        raise ValueError(
            f"Unknown metric={metric!r}. Use 'accuracy', 'auc', or a Keras metric "
            "name or instance, e.g. 'mse', 'sparse_categorical_accuracy' or "
            "keras.metrics.Precision(); or leave it unset to use the model's "
            "compiled metric (else one chosen from its output)."
        ) from None
    if isinstance(found, keras.metrics.Metric):
        def score(outputs, labels):
            fresh = type(found).from_config(found.get_config())
            fresh.update_state(*_same_rank(labels, outputs))
            return float(keras.ops.convert_to_numpy(fresh.result()))

        return (metric if isinstance(metric, str) else found.name), score
    name = metric if isinstance(metric, str) else getattr(found, "__name__", "metric")
    return name, lambda outputs, labels: float(np.mean(keras.ops.convert_to_numpy(
        found(*_same_rank(labels, outputs)))))


def check(metric, outputs, labels, output_name):
    """Raises ValueError when `metric` cannot score this output (accuracy/AUC on regression).

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.check("mse", np.zeros((4, 3)), np.zeros((4, 3)), "y")   # fine
    ```
    """
    if not isinstance(metric, str) or metric.lower() not in _ACCURACY_NAMES + ("auc",):
        return
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if kind(outputs, labels) == REGRESSION:
        raise ValueError(
            f"metric={metric!r} scores class or 0/1 predictions, but output "
            f"'{output_name}' (shape {outputs.shape[1:]}) has labels of shape "
            f"{labels.shape[1:]} that are neither class ids, one-hot rows nor 0/1 "
            "values: it is a regression output. Use metric='mse' or 'mae', or leave "
            "the metric unset to choose one from the model."
        )


def labels_for(labels, output_name, output_names):
    """The labels of one output: `labels[name]` from a dict, by position from a list, else all.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.labels_for({"a": np.zeros(3), "b": np.ones(3)}, "b", ["a", "b"])   # the ones
    ```
    """
    if isinstance(labels, dict):
        if output_name not in labels:
            raise ValueError(
                f"the labels are a dict with keys {sorted(labels)}, but the output "
                f"being scored is '{output_name}'; key the labels by output name "
                f"({list(output_names)}), or pass output=<name>.")
        return np.asarray(labels[output_name])
    if isinstance(labels, list):
        if len(labels) != len(output_names):
            raise ValueError(
                f"the labels are a list of {len(labels)} arrays, but the model has "
                f"{len(output_names)} outputs {list(output_names)}; give one array per "
                "output, or a dict keyed by output name.")
        return np.asarray(labels[list(output_names).index(output_name)])
    return np.asarray(labels)


def compiled_metric(model=None, path=None, output_name=None):
    """`{"metric": first compiled metric or None, "loss": compiled loss}` of a model or `.keras` file.

    Returns None when the model was never compiled (or the file holds no
    compile config). Per-output metrics (a dict) give the entry of
    `output_name`.

    Example:

    ```python
    import keras
    from tfcompress.export import metrics
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", "mse", metrics=["mae"])
    metrics.compiled_metric(model)   # {"metric": "mae", "loss": "mse"}
    ```
    """
    config = None
    if model is not None and getattr(model, "compiled", False):
        try:
            config = model.get_compile_config()
        except Exception:  # a compile argument Keras cannot serialize
            config = None
    elif path is not None and str(path).lower().endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json")).get("compile_config")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            config = None
    if not config:
        return None
    found = config.get("metrics")
    if isinstance(found, dict):
        found = found.get(output_name)
    if isinstance(found, (list, tuple)):
        found = found[0] if found else None
    if isinstance(found, (list, tuple)):  # one list per output
        found = found[0] if found else None
    loss = config.get("loss")
    if isinstance(loss, dict):
        loss = loss.get("config", {}).get("name") if "class_name" in loss else None
    return {"metric": _deserialize(found), "loss": loss if isinstance(loss, str) else None}


def accuracy(outputs, labels):
    """Top-1 accuracy (several classes), or 0/1 accuracy at 0.5 (probability) or 0 (logit).

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))   # 0.5
    ```
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if outputs.ndim >= 2 and outputs.shape[-1] > 1:
        predicted = np.argmax(outputs, axis=-1)
        if labels.shape == outputs.shape:
            labels = np.argmax(labels, axis=-1)  # one-hot rows
        return float(np.mean(predicted == labels.reshape(predicted.shape)))
    threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
    predicted = outputs.reshape(-1) > threshold
    return float(np.mean(predicted == (labels.reshape(-1) > 0.5)))


def auc(outputs, labels):
    """ROC AUC: of one score (probability or logit), or one-vs-rest averaged over classes.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import metrics
    metrics.auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))   # 0.75
    ```
    """
    scores = np.asarray(outputs, "float32").reshape(len(outputs), -1)
    labels = np.asarray(labels)
    if scores.shape[1] == 1:
        logits = bool(scores.min() < 0 or scores.max() > 1)
        metric = keras.metrics.AUC(from_logits=logits)
        metric.update_state(labels.reshape(-1, 1).astype("float32"), scores)
        return float(metric.result())
    classes = scores.shape[1]
    if labels.shape != scores.shape:
        ids = labels.reshape(-1).astype("int64")
        if ids.min() < 0 or ids.max() >= classes:
            raise ValueError(
                f"labels must be class ids in [0, {classes}) for a {classes}-class "
                f"output; got values from {ids.min()} to {ids.max()}."
            )
        labels = np.eye(classes, dtype="float32")[ids]
    multi_label = not np.all(labels.sum(axis=1) == 1)
    probabilities = scores.min() >= 0 and scores.max() <= 1 and (
        multi_label or np.allclose(scores.sum(axis=1), 1, atol=1e-3))
    if not probabilities:
        scores = np.asarray(keras.ops.sigmoid(scores) if multi_label
                            else keras.ops.softmax(scores, axis=-1))
    metric = keras.metrics.AUC(multi_label=True, num_labels=classes)
    metric.update_state(labels.astype("float32"), scores)
    return float(metric.result())


def _integral(labels):
    return labels.dtype.kind in "iub" or bool(np.all(np.mod(labels, 1) == 0))


def _same_rank(labels, outputs):
    """Labels of shape (n,) for an output of shape (n, 1) get the output's shape, as in `fit`."""
    labels, outputs = np.asarray(labels), np.asarray(outputs)
    if outputs.ndim == labels.ndim + 1 and outputs.shape[-1] == 1:
        labels = labels.reshape(outputs.shape).astype(outputs.dtype)
    return labels, outputs


def _deserialize(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "class_name" in value:
        try:
            return keras.metrics.deserialize(value)
        except Exception:  # a custom metric not registered here: score by its name
            return value.get("config", {}).get("name")
    return None
