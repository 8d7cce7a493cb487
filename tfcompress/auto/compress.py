"""`compress`: one call from a model and a size budget to a verified int8 TFLite file.

The plan comes from the sensitivity table: every Dense/EinsumDense/Embedding
layer may be factorized to a fraction of its rank (fewer stored values), the
whole model is quantized to int8 (a quarter of the float bytes), and the plan
keeps the factorizations with the least predicted metric drop per byte
saved until the predicted int8 bytes fit the budget. Then it trains the plan
in (fine-tuning, then quantization-aware training), exports int8 TFLite,
and measures the file: bytes from the flatbuffer, latency and the metric
from LiteRT on this machine. A file over the budget tightens the plan by
the miss and tries again.
"""

import dataclasses

import keras
import numpy as np
import pandas as pd

from tfcompress import analysis, export, factorization, quantization

#: Kept fractions of each layer's rank the plan chooses from.
FRACTIONS = (0.5, 0.25, 0.125, 0.0625)
BUDGET_KEYS = ("tflite_bytes", "latency_ms", "params")


@dataclasses.dataclass
class AutoResult:
    """What `compress` found.

    Attributes:
        model: the chosen quantization-aware Keras model (export it again
            with `tfc.export.to_tflite(model, mode="int8")`).
        tflite: the chosen int8 flatbuffer (bytes).
        report: one row per configuration tried: its ranks, predicted and
            measured bytes, parameters, LiteRT metric, latency, within budget.
        sensitivity: the sensitivity table the plan came from.

    Example:

    ```python
    from tfcompress.auto import AutoResult
    help(AutoResult.plot)
    ```
    """

    model: keras.Model
    tflite: bytes
    report: pd.DataFrame
    sensitivity: pd.DataFrame

    def plot(self):
        """The configurations tried: metric against TFLite bytes (a matplotlib figure).

        Example:

        ```python
        from tfcompress.auto import AutoResult
        help(AutoResult.plot)
        ```
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4))
        ok = self.report["within budget"]
        for chosen, marker, label in ((ok, "o", "within budget"), (~ok, "x", "over budget")):
            part = self.report[chosen]
            axes.scatter(part["tflite bytes"], part["metric"], marker=marker, label=label)
        axes.set_xlabel("int8 TFLite bytes")
        axes.set_ylabel("metric (LiteRT)")
        axes.set_title("Configurations tried")
        axes.legend()
        figure.tight_layout()
        return figure


def compress(model, data, budget, metric="accuracy", max_drop=None, loss=None, epochs=3,
             qat_epochs=2, batch_size=32, learning_rate=1e-3, tries=3, verbose=1):
    """Compresses `model` to an int8 TFLite file within `budget`, with the least metric drop.

    Args:
        model: a trained Sequential or functional Keras model (not changed).
        data: `(x, y)` or `{"x", "y", "x_val", "y_val"}`; the sensitivity,
            the choice and the reported metric use the validation data (else `x, y`).
        budget: `{"tflite_bytes": N}` and/or `{"params": N}` (what the plan
            fits), optionally `"latency_ms"` (checked on the exported file:
            LiteRT, batch 1, one thread, this machine).
        metric: as in `tfcompress.analysis.sensitivity`.
        max_drop: the largest metric drop from the float model accepted; a
            result beyond it is an error naming it.
        loss: for fine-tuning; default the model's compiled loss.
        epochs, qat_epochs: fine-tuning of the factorized model, then QAT.
        tries: how many plans to train before giving up on the budget.
        verbose: 1 prints each try.

    Returns:
        An `AutoResult`.

    Raises:
        ValueError: a budget no plan can meet (it names the closest
            configuration found), or `max_drop` exceeded.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress import examples
    (x, y), (xv, yv), _ = examples.digits()
    model = examples.digits_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    float_bytes = len(tfc.export.to_tflite(model))
    result = tfc.auto.compress(model, {"x": x, "y": y, "x_val": xv, "y_val": yv},
                               budget={"tflite_bytes": float_bytes // 8}, verbose=0)
    assert len(result.tflite) <= float_bytes // 8
    ```
    """
    unknown = sorted(set(budget) - set(BUDGET_KEYS))
    if unknown or not budget:
        raise ValueError(f"budget takes {', '.join(BUDGET_KEYS)}; got {sorted(budget)}.")
    x, y, x_val, y_val = _split(data)
    loss = loss or getattr(model, "loss", None)
    if loss is None:
        raise ValueError("compress fine-tunes the model, so it needs its loss: pass loss=..., "
                         "or compile the model with its loss (before saving it, for the CLI).")
    candidates = _factorizable(model)
    table = analysis.sensitivity(model, (x_val, y_val), metric=metric,
                                 techniques={"low_rank": FRACTIONS},
                                 layers=list(candidates) or None, verbose=verbose)
    calibration = keras.tree.map_structure(lambda a: a[:256], x)  # x may be {input: array}
    int8_bytes = len(export.to_tflite(model, mode="int8", representative_data=calibration))
    baseline = table.attrs["baseline"]

    rows, best = [], None
    target = dict(budget)
    for attempt in range(tries):
        ranks, predicted = _plan(table, candidates, model.count_params(), int8_bytes, target)
        if ranks is None:
            break
        qat, flatbuffer, row = _train(model, ranks, x, y, x_val, y_val, loss, epochs, qat_epochs,
                                      batch_size, learning_rate, metric, calibration)
        row.update(predicted=predicted, baseline=baseline)
        row["within budget"] = all(row[_COLUMN[k]] <= v for k, v in budget.items())
        rows.append(row)
        if verbose:
            print(f"try {attempt + 1}: {row}")
        if row["within budget"]:
            best = (qat, flatbuffer, row)
            break
        for key in ("tflite_bytes", "params"):  # tighten by the miss, and plan again
            if key in target:
                target[key] = target[key] * budget[key] / max(row[_COLUMN[key]], 1)
        if "latency_ms" in budget and row["latency ms"] > budget["latency_ms"]:
            target["tflite_bytes"] = target.get("tflite_bytes", row["tflite bytes"]) * (
                budget["latency_ms"] / row["latency ms"])
    report = pd.DataFrame(rows)
    if best is None:
        closest = min(rows, key=lambda r: r["tflite bytes"]) if rows else _smallest(
            candidates, model.count_params(), int8_bytes)
        raise ValueError(f"No configuration meets the budget {budget}. The closest found: "
                         f"{closest}. Allow more bytes/latency, or compress the model further "
                         "first (structured pruning: tfcompress.pruning.prune_filters + shrink).")
    qat, flatbuffer, row = best
    drop = baseline - row["metric"]
    if max_drop is not None and drop > max_drop:
        raise ValueError(f"The configuration within the budget loses {drop:.4f} of the metric "
                         f"(max_drop={max_drop}): {row}. Allow a larger budget or max_drop, or "
                         "train longer (epochs=, qat_epochs=).")
    return AutoResult(model=qat, tflite=flatbuffer, report=report, sensitivity=table)


_COLUMN = {"tflite_bytes": "tflite bytes", "params": "params", "latency_ms": "latency ms"}


def _split(data):
    if isinstance(data, dict):
        x, y = data["x"], np.asarray(data["y"])
        return x, y, data.get("x_val", x), np.asarray(data.get("y_val", y))
    x, y = data
    return x, np.asarray(y), x, np.asarray(y)


def _factorizable(model):
    """`{name: (m, n)}` of the Dense and Embedding layers of the model's graph (nested models
    included), whose 2-D kernel `factorize` can split."""
    found = {}
    for layer in _graph_layers(model):
        if type(layer) is keras.layers.Dense:
            found[layer.name] = tuple(layer.kernel.shape)
        elif type(layer) is keras.layers.Embedding:
            found[layer.name] = tuple(layer.embeddings.shape)
    return found


def _graph_layers(model):
    """The layers of `model`'s graph, nested models' included; not the sublayers a composite
    layer's own code calls (keras-rs FeatureCross's Dense), which `factorize` cannot split."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _graph_layers(layer)
        else:
            yield layer


def _plan(table, candidates, params, int8_bytes, target):
    """`({layer: rank}, predicted)` meeting `target` with the least predicted drop, greedily by
    drop per value saved; `(None, None)` when even every smallest rank does not fit."""
    drops = {(r.layer, r.setting): max(float(r.drop), 0.0) for r in table.itertuples()}
    chosen = {name: None for name in candidates}  # None: left whole

    def values(name, fraction):
        m, n = candidates[name]
        if fraction is None:
            return m * n
        return _rank(name, fraction, candidates) * (m + n)

    def predicted():
        saved = sum(values(n, None) - values(n, f) for n, f in chosen.items())
        return {"params": params - saved, "tflite_bytes": int8_bytes - saved}

    def fits(p):
        return all(p[k] <= v for k, v in target.items() if k in p)

    while not fits(predicted()):
        moves = []
        for name, fraction in chosen.items():
            following = [f for f in FRACTIONS if fraction is None or f < fraction]
            if not following:
                continue
            step = following[0]
            saved = values(name, fraction) - values(name, step)
            if saved <= 0:
                continue
            cost = drops.get((name, step), 0.0) - (drops.get((name, fraction), 0.0)
                                                   if fraction else 0.0)
            moves.append(((max(cost, 0.0) + 1e-6) / saved, name, step))
        if not moves:
            return None, None
        _, name, step = min(moves)
        chosen[name] = step
    ranks = {n: _rank(n, f, candidates) for n, f in chosen.items() if f is not None}
    return ranks, predicted()


def _smallest(candidates, params, int8_bytes):
    saved = sum(m * n - _rank(name, FRACTIONS[-1], candidates) * (m + n)
                for name, (m, n) in candidates.items()
                if m * n > _rank(name, FRACTIONS[-1], candidates) * (m + n))
    return {"every layer at rank fraction": FRACTIONS[-1],
            "predicted tflite bytes": int8_bytes - saved, "predicted params": params - saved}


def _rank(name, fraction, candidates):
    return max(1, int(round(fraction * min(candidates[name]))))


def _train(model, ranks, x, y, x_val, y_val, loss, epochs, qat_epochs, batch_size,
           learning_rate, metric, calibration):
    small = factorization.factorize(model, rank=ranks) if ranks else keras.models.clone_model(
        model)
    if not ranks:
        small.set_weights(model.get_weights())
    small.compile(keras.optimizers.Adam(learning_rate), loss)
    if epochs:
        small.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    qat = quantization.quantize_model(small)
    # the LiteRT score below is the compiled metric's (tfcompress.export.verify)
    qat.compile(keras.optimizers.Adam(learning_rate / 3), loss,
                metrics=[metric] if isinstance(metric, str) and metric != "auc" else None)
    if qat_epochs:
        qat.fit(x, y, batch_size=batch_size, epochs=qat_epochs, verbose=0)
    # calibration covers tensors QAT put no range on (a composite layer's own ops)
    flatbuffer = export.to_tflite(qat, mode="int8", representative_data=calibration)
    checked = export.verify(flatbuffer, qat, (x_val, y_val), latency_runs=50)
    return qat, flatbuffer, {
        "ranks": dict(ranks), "tflite bytes": len(flatbuffer), "params": small.count_params(),
        "metric": float(checked.artifact_score), "metric name": checked.metric,
        "latency ms": checked.latency_ms}
