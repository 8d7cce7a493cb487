"""Layer-by-layer sensitivity: how much the metric drops when one layer alone is compressed.

No training: for every layer with a main weight (the kernels pruning works
on, however deep inside composite layers) and every setting, the weight is
replaced by its compressed value, the model predicts the evaluation data
once, and the weight is put back.
"""

import os

import keras
import numpy as np
import pandas as pd

from tfcompress.clustering import centroids
from tfcompress.core import channels
from tfcompress.clustering.config import CentroidInitialization
from tfcompress.pruning import registry

#: Every technique and its default settings: sparsities, bits, kept rank fractions, clusters.
TECHNIQUES = {
    "prune": (0.5, 0.7, 0.8, 0.9, 0.95),
    "quantize": (8, 4),
    "low_rank": (0.5, 0.25, 0.125),
    "cluster": (32, 16, 8),
    "filters": (0.75, 0.5, 0.25),
}
#: Techniques whose settings are fractions (TensorBoard steps: percent).
_FRACTIONS = ("prune", "low_rank", "filters")
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou")


def sensitivity(model, data, metric="accuracy", techniques=("prune", "quantize"), layers=None,
                batch_size=256, log_dir=None, verbose=1):
    """Metric drop from compressing each layer alone, as a DataFrame.

    Args:
        model: a built Keras model (not changed: weights are put back).
        data: `(x, y)` evaluation data (`x` may be a dict of inputs).
        metric: `"accuracy"` (argmax of several outputs, or a 0.5 threshold
            of one), `"auc"`, any `keras.metrics` name or instance, or a
            function `(y_true, y_pred) -> float`. Its direction comes from its
            name (accuracy/AUC/precision/recall up, anything else down); the
            `drop` column is always "worse by".
        techniques: names from `TECHNIQUES` (their default settings), or a
            dict `{name: settings}`: `prune` sparsities, `quantize` weight
            bits (per output channel, per row for Embedding tables; weights
            only), `low_rank` kept fractions of the rank (truncated SVD of
            2-D weights and of convolution kernels as `[h·w·in, out]`),
            `cluster` numbers of shared values (k-means), `filters` kept
            fractions of the layer's output channels (filters, units,
            embedding columns; the weakest by L2 norm are removed: the
            weights reading them are zeroed, which is what `tfcompress.shrink`
            then removes). `filters` rows exist only for layers whose
            channels can be removed (`tfcompress.core.channels`: not the
            model's outputs, not channels fixed by a reshape or a norm).
        layers: names of the layers to analyse (default: all with a main
            weight), and of inner channel groups for `filters` (a keras-hub
            encoder's `"encoder_0/ffn"` units or `"encoder_0/heads"`; by
            default all of them).
        batch_size: prediction batch size.
        log_dir: also write the table to TensorBoard there (see `log_sensitivity`).
        verbose: 1 shows a progress bar (one step per evaluation).

    Returns:
        A DataFrame with one row per (layer, technique, setting): `layer`,
        `weights` (its main weights' entries), `technique`, `setting`,
        `metric` and `drop` (baseline minus metric, or metric minus
        baseline for a metric that goes down); `baseline` in `.attrs`.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="a"),
                              keras.layers.Dense(3, name="b")])
    x, y = np.random.rand(64, 4), np.random.randint(0, 3, 64)
    table = tfc.analysis.sensitivity(model, (x, y), techniques={"prune": (0.5, 0.9)},
                                     verbose=0)
    assert set(table.layer) == {"a", "b"}
    ```
    """
    settings = _techniques(techniques)
    x, y = _split(data)
    score, higher = _metric(metric)
    groups = _filter_groups(model) if "filters" in settings else {}
    # inner channel groups (a keras-hub encoder's "encoder_0/ffn" units, "/heads") are named
    # like no layer: only `filters` rows measure them
    inner = [n for n in (groups if layers is None else layers) if "/" in n and n in groups]
    chosen = _layers(model, None if layers is None else [n for n in layers if n not in inner],
                     allow_empty=bool(inner))
    units = [(name, layer, weights, technique) for name, (layer, weights) in chosen.items()
             for technique in settings if technique != "filters" or name in groups]
    units += [(name, None, [u.weight for u in groups[name].producers], "filters")
              for name in inner]
    progress = keras.utils.Progbar(1 + sum(len(settings[u[3]]) for u in units),
                                   verbose=verbose)

    def evaluate():
        value = float(score(y, model.predict(x, batch_size=batch_size, verbose=0)))
        progress.add(1)
        return value

    baseline = evaluate()
    rows = []
    for name, layer, weights, technique in units:
        table_rows = isinstance(layer, keras.layers.Embedding)  # one scale per row
        for setting in settings[technique]:
            if technique == "filters":
                group = groups[name]
                gone = channels.weakest(group, group.size - channels.kept(group.size, setting))
                changes = [(u.weight, channels.unread(u, group, gone))
                           for u in group.uses if u.role == "in"]
            else:
                changes = [(w, _compress(technique, setting, np.asarray(w), table_rows))
                           for w in weights]
            originals = [(w, np.asarray(w)) for w, _ in changes]
            try:
                for w, value in changes:
                    w.assign(value)
                measured = evaluate()
            finally:
                for w, value in reversed(originals):
                    w.assign(value)
            rows.append({"layer": name, "weights": sum(int(np.prod(w.shape)) for w in weights),
                         "technique": technique, "setting": setting, "metric": measured,
                         "drop": (baseline - measured) if higher else (measured - baseline)})
    table = pd.DataFrame(rows, columns=["layer", "weights", "technique", "setting", "metric",
                                        "drop"])
    table.attrs["baseline"] = baseline
    if log_dir is not None:
        log_sensitivity(table, log_dir)
    return table


def plot_sensitivity(table, technique="prune"):
    """A matplotlib figure: the metric drop against the setting, one line per layer.

    Example:

    ```python
    import pandas as pd
    from tfcompress.analysis import plot_sensitivity
    table = pd.DataFrame({"layer": ["a", "a"], "technique": ["prune"] * 2,
                          "setting": [0.5, 0.9], "drop": [0.0, 0.1]})
    figure = plot_sensitivity(table)
    ```
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plot_sensitivity draws with matplotlib: pip install matplotlib") \
            from error
    rows = table[table.technique == technique]
    if rows.empty:
        raise ValueError(f"The table has no {technique!r} rows; it has "
                         f"{sorted(set(table.technique))}.")
    figure, axes = plt.subplots(figsize=(6, 4))
    for layer, part in rows.groupby("layer", sort=False):
        axes.plot(part["setting"], part["drop"], marker="o", label=layer)
    axes.set_xlabel({"prune": "sparsity", "quantize": "bits", "low_rank": "kept rank fraction",
                     "cluster": "clusters", "filters": "kept fraction of channels"}.get(technique, technique))
    axes.set_ylabel("metric drop")
    axes.set_title(f"Sensitivity to {technique}, one layer at a time")
    if technique != "prune":
        axes.invert_xaxis()  # fewer bits / rank / clusters: more compression, to the right
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def log_sensitivity(table, log_dir):
    """Writes `table` to TensorBoard under `log_dir/sensitivity`: scalars
    `sensitivity/<technique>/<layer>` (the drop; step: the setting, fractions
    in percent), one multi-line chart per technique, and each technique's
    plot as an image when matplotlib is installed.

    Example:

    ```python
    import pandas as pd, tempfile
    from tfcompress.analysis import log_sensitivity
    table = pd.DataFrame({"layer": ["a"], "technique": ["prune"], "setting": [0.5],
                          "drop": [0.01]})
    log_sensitivity(table, tempfile.mkdtemp())
    ```
    """
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2, summary as custom_scalar

    writer = tf.summary.create_file_writer(os.path.join(log_dir, "sensitivity"))
    techniques = list(dict.fromkeys(table.technique))
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title="sensitivity", chart=[
        layout_pb2.Chart(title=f"metric drop: {t}", multiline=layout_pb2.MultilineChartContent(
            tag=[rf"sensitivity/{t}/.*"])) for t in techniques])])
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(custom_scalar.pb(layout).SerializeToString(), step=0)
        for row in table.itertuples():
            step = (round(row.setting * 100) if row.technique in _FRACTIONS
                    else int(row.setting))
            tf.summary.scalar(f"sensitivity/{row.technique}/{row.layer}", row.drop, step=step)
        for technique in techniques:
            try:
                image = _png(plot_sensitivity(table, technique))
            except ImportError:
                break
            tf.summary.image(f"sensitivity/{technique}", image[None], step=0)
    writer.flush()


def _png(figure):
    import io

    import matplotlib.pyplot as plt
    import tensorflow as tf

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return tf.image.decode_png(buffer.getvalue(), channels=4)


def _techniques(techniques):
    if isinstance(techniques, str):
        techniques = [techniques]
    if not isinstance(techniques, dict):
        techniques = {name: TECHNIQUES.get(name) for name in techniques}
    unknown = sorted(name for name in techniques if name not in TECHNIQUES)
    if unknown:
        raise ValueError(f"Unknown technique(s) {unknown}; sensitivity knows "
                         f"{', '.join(TECHNIQUES)}.")
    return {name: tuple(values) for name, values in techniques.items()}


def _split(data):
    if isinstance(data, dict) and "x" in data:
        return data["x"], np.asarray(data["y"])
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], np.asarray(data[1])
    raise ValueError("data must be (x, y) or {'x': ..., 'y': ...} evaluation arrays; got "
                     f"{type(data).__name__}.")


def _metric(metric):
    """`(score(y_true, y_pred) -> float, higher_is_better)`."""
    if callable(metric) and not isinstance(metric, keras.metrics.Metric):
        name = getattr(metric, "__name__", "")
        return metric, not name or any(key in name.lower() for key in _HIGHER_IS_BETTER)
    if metric == "accuracy":
        def accuracy(y_true, y_pred):
            y_pred = np.asarray(y_pred)
            if y_pred.ndim > 1 and y_pred.shape[-1] > 1:
                guess = y_pred.argmax(-1)
            else:
                guess = (y_pred.reshape(len(y_pred), -1)[:, 0] > 0.5).astype(int)
            return float(np.mean(guess == np.asarray(y_true).reshape(len(guess))))
        return accuracy, True
    if metric == "auc":
        from sklearn.metrics import roc_auc_score

        return (lambda y_true, y_pred: roc_auc_score(np.ravel(y_true), np.ravel(y_pred))), True
    instance = keras.metrics.get(metric)
    if not isinstance(instance, keras.metrics.Metric):
        function = instance
        return (lambda y_true, y_pred: float(np.mean(function(y_true, y_pred)))), any(
            key in str(metric).lower() for key in _HIGHER_IS_BETTER)

    def keras_metric(y_true, y_pred):
        instance.reset_state()
        instance.update_state(y_true, y_pred)
        return float(instance.result())
    return keras_metric, any(key in instance.name.lower() for key in _HIGHER_IS_BETTER)


def _layers(model, names, allow_empty=False):
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if registry.has_rule(layer) and not isinstance(layer, keras.Model):
            weights = registry.prunable_weights(layer)
            if weights:
                found.setdefault(layer.name, (layer, weights))
    if names is not None:
        missing = sorted(set(names) - set(found))
        if missing:
            raise ValueError(f"No layer(s) {missing} with a main weight; the model has "
                             f"{sorted(found)}.")
        found = {name: found[name] for name in names}
    if not found and not allow_empty:
        raise ValueError("The model has no layer with a main weight (Dense, Conv, Embedding, "
                         "attention, ...) to analyse.")
    return found


def _filter_groups(model):
    """`{layer name: the channel group it makes}` for groups whose channels can be removed."""
    try:
        found = channels.channel_groups(model)
    except ValueError:  # a subclassed model: no graph to read channels from
        return {}
    return {name: g for name, g in found.items() if g.prunable}


def _compress(technique, setting, value, table=False):
    """`value` (a numpy weight) with one technique applied at one setting."""
    if technique == "prune":
        keep = max(int(round(value.size * (1 - setting))), 1)
        threshold = np.sort(np.abs(value).ravel())[::-1][keep - 1]
        return np.where(np.abs(value) >= threshold, value, 0).astype(value.dtype)
    if technique == "quantize":
        top = 2 ** (int(setting) - 1) - 1
        axis = -1 if table else tuple(range(max(value.ndim - 1, 1)))
        quantized, scale = keras.quantizers.abs_max_quantize(
            value, axis=axis, value_range=(-top, top), dtype="int8", to_numpy=True)
        return (np.asarray(quantized, "float32") / np.asarray(scale)).astype(value.dtype)
    if technique == "low_rank":
        if value.ndim < 2:
            return value
        matrix = value.reshape(-1, value.shape[-1])
        rank = max(1, int(round(setting * min(matrix.shape))))
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        return ((u[:, :rank] * s[:rank]) @ vt[:rank]).reshape(value.shape).astype(value.dtype)
    # cluster: every entry replaced by its nearest of `setting` k-means centroids
    shared = centroids.initial(value, int(setting), CentroidInitialization.KMEANS_PLUS_PLUS)
    shared = np.sort(np.asarray(shared, value.dtype))
    nearest = np.searchsorted((shared[1:] + shared[:-1]) / 2, value)
    return shared[nearest]
