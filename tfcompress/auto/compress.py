"""`compress`: one call from a model and a size budget to a verified int8 TFLite file.

The plan comes from the sensitivity table. Each layer of the model's graph
may lose a fraction of its output channels (filters, units, embedding
columns, a keras-hub encoder's feed-forward units or attention heads: the
weakest by L2 norm, removed with `tfcompress.shrink`, which also shrinks
every weight reading them), or, for a Dense or Embedding
layer, be factorized to a fraction of its rank; the whole model is
quantized to int8 (a quarter of the float bytes). The plan takes the steps
with the least predicted metric drop per value saved until the predicted
int8 bytes fit the budget. Then it trains the plan in (fine-tuning,
optionally distilled from the original, then quantization-aware training),
exports int8 TFLite, and measures the file: bytes from the flatbuffer,
latency and the metric from LiteRT on this machine. A file over the budget
tightens the plan by the miss and tries again.

Unstructured sparsity is not planned: an int8 TFLite file keeps every zero
(XNNPack cannot run int8 weights encoded sparsely), so it saves no bytes.
"""

import dataclasses
import gzip

import keras
import numpy as np
import pandas as pd

from tfcompress import analysis, distillation, export, factorization, quantization
from tfcompress.core import channels, shrink

#: Kept fractions of a layer's rank, or of its output channels, the plan chooses from.
FRACTIONS = (0.75, 0.5, 0.375, 0.25, 0.125, 0.0625)
#: What the plan may do to a layer (sensitivity techniques).
TECHNIQUES = ("filters", "low_rank")
BUDGET_KEYS = ("tflite_bytes", "gzip_bytes", "latency_ms", "params")


@dataclasses.dataclass
class AutoResult:
    """What `compress` found.

    Attributes:
        model: the chosen quantization-aware Keras model (export it again
            with `tfc.export.to_tflite(model, mode="int8")`).
        tflite: the chosen int8 flatbuffer (bytes).
        report: one row per configuration tried: its plan (`{layer: "rank r"
            or "k/n channels"}`), predicted and measured bytes, parameters,
            LiteRT metric, latency, within budget.
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
        report = self.report.sort_values("tflite bytes")
        ok = report["within budget"]
        for chosen, marker, label in ((ok, "o", "within budget"), (~ok, "x", "over budget")):
            part = report[chosen]
            axes.scatter(part["tflite bytes"], part["metric"], marker=marker, label=label)
        front = report[report["metric"] >= report["metric"].cummax()]  # none smaller and better
        axes.step(front["tflite bytes"], front["metric"], where="post", color="grey",
                  linewidth=0.8, label="Pareto front")
        axes.axhline(report["baseline"].iloc[0], color="grey", linestyle=":", label="float model")
        axes.set_xlabel("int8 TFLite bytes")
        axes.set_ylabel(f"{report['metric name'].iloc[0]} (LiteRT)")
        axes.set_title("Configurations tried")
        axes.legend(fontsize="small")
        figure.tight_layout()
        return figure


def compress(model, data, budget, metric="accuracy", max_drop=None, loss=None, epochs=3,
             qat_epochs=2, batch_size=32, learning_rate=1e-3, tries=3, distill=False,
             verbose=1):
    """Compresses `model` to an int8 TFLite file within `budget`, with the least metric drop.

    Args:
        model: a trained Sequential or functional Keras model (not changed).
        data: `(x, y)` or `{"x", "y", "x_val", "y_val"}`; the sensitivity,
            the choice and the reported metric use the validation data (else `x, y`).
        budget: `{"tflite_bytes": N}` (the file), `{"gzip_bytes": N}` (the
            file gzipped, as an app download carries it) and/or
            `{"params": N}` (what the plan fits), optionally `"latency_ms"`
            (measured on the exported file:
            LiteRT, batch 1, one thread, this machine; a miss tightens the
            byte target in proportion and plans again).
        metric: as in `tfcompress.analysis.sensitivity`.
        max_drop: the largest metric drop from the float model accepted; a
            result beyond it is an error naming it.
        loss: for fine-tuning; default the model's compiled loss.
        epochs, qat_epochs: fine-tuning of the reduced model, then QAT.
        tries: how many plans to train before giving up on the budget.
        distill: fine-tune with the original model as the teacher
            (`tfcompress.distillation`: logits distillation for a
            several-class logits output, binary for one probability/logit).
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
    teacher_loss = _distillation_loss(model, loss) if distill else None
    sizes = _Sizes(model)
    table = analysis.sensitivity(model, (x_val, y_val), metric=metric,
                                 techniques={t: FRACTIONS for t in TECHNIQUES},
                                 layers=list(sizes.candidates) or None, verbose=verbose)
    calibration = keras.tree.map_structure(lambda a: a[:256], x)  # x may be {input: array}
    int8_file = export.to_tflite(model, mode="int8", representative_data=calibration)
    int8_bytes = len(int8_file)
    baseline = table.attrs["baseline"]
    settings = dict(epochs=epochs, qat_epochs=qat_epochs, batch_size=batch_size,
                    learning_rate=learning_rate, metric=metric, teacher_loss=teacher_loss)

    rows, best, smallest = [], None, None
    target = dict(budget)
    if "gzip_bytes" in budget:  # planned as the file bytes that gzip to it (the model's ratio)
        raw = budget["gzip_bytes"] * int8_bytes / _gzipped(int8_file)
        target["tflite_bytes"] = min(target.get("tflite_bytes", raw), raw)
    for attempt in range(tries):
        plan, predicted, fits = _plan(table, sizes, int8_bytes, target)
        limits = {k: target[k] for k in ("tflite_bytes", "gzip_bytes") if k in budget}
        if fits and limits:
            plan, predicted, fits = _sized(plan, predicted, model, table, sizes, int8_bytes,
                                           target, limits, calibration)
        if not fits:
            smallest = {"plan": _describe(plan, sizes), **predicted}
            break
        qat, flatbuffer, row = _train(model, plan, sizes, (x, y, x_val, y_val), loss,
                                      calibration, **settings)
        row.update(predicted=predicted, baseline=baseline)
        row["within budget"] = all(row[_COLUMN[k]] <= v for k, v in budget.items())
        rows.append(row)
        if verbose:
            print(f"try {attempt + 1}: {row}")
        if row["within budget"]:
            best = (qat, flatbuffer, row)
            break
        for key in ("tflite_bytes", "gzip_bytes", "params"):  # tighten by the miss, plan again
            if key in budget and row[_COLUMN[key]] > budget[key]:
                ratio = budget[key] / row[_COLUMN[key]]
                target[key] = target[key] * ratio
                if key == "gzip_bytes":
                    target["tflite_bytes"] = target["tflite_bytes"] * ratio
        if "latency_ms" in budget and row["latency ms"] > budget["latency_ms"]:
            target["tflite_bytes"] = target.get("tflite_bytes", row["tflite bytes"]) * (
                budget["latency_ms"] / row["latency ms"])
    report = pd.DataFrame(rows)
    if best is None:
        closest = min(rows, key=lambda r: r["tflite bytes"]) if rows else smallest
        raise ValueError(f"No configuration meets the budget {budget}. The closest found: "
                         f"{closest}. Allow more bytes/latency, or train a smaller model.")
    qat, flatbuffer, row = best
    drop = baseline - row["metric"]
    if max_drop is not None and drop > max_drop:
        raise ValueError(f"The configuration within the budget loses {drop:.4f} of the metric "
                         f"(max_drop={max_drop}): {row}. Allow a larger budget or max_drop, or "
                         "train longer (epochs=, qat_epochs=, distill=True).")
    return AutoResult(model=qat, tflite=flatbuffer, report=report, sensitivity=table)


_COLUMN = {"tflite_bytes": "tflite bytes", "gzip_bytes": "gzip bytes", "params": "params",
           "latency_ms": "latency ms"}


def _gzipped(flatbuffer):
    return len(gzip.compress(flatbuffer, 9))


def _split(data):
    if isinstance(data, dict):
        x, y = data["x"], np.asarray(data["y"])
        return x, y, data.get("x_val", x), np.asarray(data.get("y_val", y))
    x, y = data
    return x, np.asarray(y), x, np.asarray(y)


def _graph_layers(model):
    """The layers of `model`'s graph, nested models' included; not the sublayers a composite
    layer's own code calls (keras-rs FeatureCross's Dense), which neither `factorize` nor
    `shrink` can change."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _graph_layers(layer)
        else:
            yield layer


def _main_weight(layer):
    """The 2-D weight `factorize` splits (a Dense kernel, an Embedding table), or None."""
    if type(layer) is keras.layers.Dense:
        return layer.kernel
    if type(layer) is keras.layers.Embedding:
        return layer.embeddings
    return None


class _Sizes:
    """What each layer of the model's graph can do, and how many values a plan keeps.

    `candidates` is `{layer name: techniques}`: `"filters"` for the layers that make a
    removable channel group (and for a composite layer's inner groups, named
    `"<layer>/ffn"`, `"<layer>/heads"`), `"low_rank"` for Dense and Embedding layers.
    """

    def __init__(self, model):
        layers = list(_graph_layers(model))
        try:
            found = channels.channel_groups(model)
        except ValueError:  # a subclassed model: no graph
            found = {}
        self.groups = {n: g for n, g in found.items() if g.prunable}
        self.matrices = {layer.name: id(_main_weight(layer)) for layer in layers
                         if _main_weight(layer) is not None}
        self.candidates = {}
        for layer in layers:
            options = tuple(t for t, ok in (("filters", layer.name in self.groups),
                                            ("low_rank", layer.name in self.matrices)) if ok)
            if options:
                self.candidates[layer.name] = options
        # a composite layer's own channels: a keras-hub encoder's "encoder_0/ffn", "/heads"
        self.candidates.update({n: ("filters",) for n in self.groups if "/" in n})
        self.shapes = {id(w): tuple(w.shape) for w in model.weights}
        self.total = sum(int(np.prod(shape)) for shape in self.shapes.values())

    def shapes_after(self, plan):
        """`{id(weight): shape}` once the plan's channels are removed."""
        removed = {}
        for name, (technique, fraction) in plan.items():
            if technique != "filters":
                continue
            group = self.groups[name]
            gone = group.size - channels.kept(group.size, fraction)
            for use in group.uses:
                axes = removed.setdefault(id(use.weight), {})
                axis = use.axis % len(self.shapes[id(use.weight)])
                copies = len(channels.positions(use.blocks, group.name))
                axes[axis] = axes.get(axis, 0) + copies * gone
        return {key: tuple(d - removed.get(key, {}).get(a, 0) for a, d in enumerate(shape))
                for key, shape in self.shapes.items()}

    def values(self, plan):
        shapes = self.shapes_after(plan)
        total = sum(int(np.prod(shape)) for shape in shapes.values())
        for name, (technique, fraction) in plan.items():
            if technique == "low_rank":
                m, n = shapes[self.matrices[name]]
                total += channels.kept(min(m, n), fraction) * (m + n) - m * n
        return total


def _plan(table, sizes, int8_bytes, target):
    """`(plan, predicted, fits)`: `plan` is `{layer: (technique, kept fraction)}`, grown
    greedily by the least predicted drop per value saved until `target` fits, or as far as
    it goes."""
    drops = {(r.layer, r.technique, r.setting): max(float(r.drop), 0.0)
             for r in table.itertuples()}
    plan = {}

    def predicted(p):
        saved = sizes.total - sizes.values(p)
        return {"params": sizes.total - saved, "tflite_bytes": int8_bytes - saved}

    def fits(p):
        return all(p[k] <= v for k, v in target.items() if k in p)

    now = sizes.values(plan)
    while not fits(predicted(plan)):
        moves = []
        for name, options in sizes.candidates.items():
            current = plan.get(name)
            for technique in options if current is None else (current[0],):
                for fraction in [f for f in FRACTIONS if current is None or f < current[1]]:
                    saved = now - sizes.values({**plan, name: (technique, fraction)})
                    if saved > 0:  # the first step that saves (a thin pair may hold more)
                        cost = drops.get((name, technique, fraction), 0.0) - (
                            drops.get((name, *current), 0.0) if current else 0.0)
                        moves.append(((max(cost, 0.0) + 1e-6) / saved, name, technique,
                                      fraction))
                        break
        if not moves:
            return plan, predicted(plan), False
        _, name, technique, fraction = min(moves)
        plan[name] = (technique, fraction)
        now = sizes.values(plan)
    # give back what the last steps took beyond the target: undo a step while the plan still
    # fits, the largest predicted drop first (then the most values back)
    while True:
        undo = []
        for name, (technique, fraction) in plan.items():
            larger = [f for f in FRACTIONS if f > fraction]
            whole = {k: v for k, v in plan.items() if k != name}
            trial = {**plan, name: (technique, larger[-1])} if larger else whole
            if sizes.values(trial) >= sizes.values(whole):
                trial, larger = whole, []
            if fits(predicted(trial)):
                gain = drops.get((name, technique, fraction), 0.0) - (
                    drops.get((name, technique, larger[-1]), 0.0) if larger else 0.0)
                undo.append((-gain, -sizes.values(trial), name, trial))
        if not undo:
            return plan, predicted(plan), True
        plan = min(undo, key=lambda u: u[:2])[3]


def _sized(plan, predicted, model, table, sizes, int8_bytes, target, limits, calibration,
           rounds=5):
    """The plan whose untrained int8 file is largest within `limits` (`tflite_bytes` and/or
    `gzip_bytes`), found by exporting each plan and re-planning for the bytes it missed or left
    over (a file's bytes per value are not one: int32 biases, per-channel scales, names)."""
    best, goal = None, dict(target)
    for _ in range(rounds):
        qat = quantization.quantize_model(_reduce(model, plan)[0])  # as `_train` exports it
        qat(calibration, training=True)  # sets the ranges (the int8 values gzip as trained)
        flatbuffer = export.to_tflite(qat, mode="int8", representative_data=calibration)
        size = {"tflite_bytes": len(flatbuffer), "gzip_bytes": _gzipped(flatbuffer)}
        if all(size[k] <= v for k, v in limits.items()) and (
                best is None or size["tflite_bytes"] > best[1]["tflite_bytes"]):
            best = (plan, {**predicted, **size})
        # the file bytes allowed: the tightest limit, a gzip one at this file's ratio
        allowed = min(v * size["tflite_bytes"] / size[k] for k, v in limits.items())
        if allowed * 0.97 <= size["tflite_bytes"] <= allowed:
            break
        # what the file holds beyond the predicted bytes: aim the prediction below by as much
        goal["tflite_bytes"] = allowed - (size["tflite_bytes"] - predicted["tflite_bytes"])
        plan, predicted, fits = _plan(table, sizes, int8_bytes, goal)
        if not fits:
            break
    if best is None:
        return plan, predicted, False
    return (*best, True)


def _describe(plan, sizes):
    """`{layer: "rank r" or "k/n channels"}`, as `_reduce` would make it."""
    shapes, out = sizes.shapes_after(plan), {}
    for name, (technique, fraction) in plan.items():
        if technique == "filters":
            size = sizes.groups[name].size
            out[name] = f"{channels.kept(size, fraction)}/{size} channels"
        else:
            out[name] = f"rank {channels.kept(min(shapes[sizes.matrices[name]]), fraction)}"
    return out


def _reduce(model, plan):
    """A copy of `model` with the plan's channels removed (`shrink`), then its layers factorized:
    `(model, {layer: what it became})`."""
    small = keras.models.clone_model(model)
    small.set_weights(model.get_weights())
    filters = {n: f for n, (t, f) in plan.items() if t == "filters"}
    described = {}
    if filters:
        groups = channels.channel_groups(small)
        for name, fraction in filters.items():
            group = groups[name]
            gone = channels.weakest(group, group.size - channels.kept(group.size, fraction))
            for use in group.uses:
                if use.role == "in":
                    use.weight.assign(channels.unread(use, group, gone))
            described[name] = f"{group.size - len(gone)}/{group.size} channels"
        small = shrink(small)
    layers = {layer.name: layer for layer in _graph_layers(small)}
    ranks = {n: channels.kept(min(_main_weight(layers[n]).shape), f)
             for n, (t, f) in plan.items() if t == "low_rank"}
    described.update({n: f"rank {r}" for n, r in ranks.items()})
    if ranks:
        small = factorization.factorize(small, rank=ranks)
    return small, described


def _distillation_loss(model, loss):
    """The distillation loss that fits the model's output, or a clear error."""
    outputs = model.outputs
    from_logits = bool(getattr(loss, "from_logits", False))
    if len(outputs) == 1 and outputs[0].shape[-1] == 1:
        return distillation.BinaryDistillation(from_logits=from_logits)
    if len(outputs) == 1 and from_logits:
        return distillation.LogitsDistillation(temperature=2.0)
    raise ValueError("distill=True needs one output: several-class logits (a loss with "
                     "from_logits=True) or one click probability/logit; got "
                     f"{len(outputs)} output(s) and loss {loss!r}.")


def _train(model, plan, sizes, data, loss, calibration, epochs, qat_epochs, batch_size,
           learning_rate, metric, teacher_loss):
    x, y, x_val, y_val = data
    small, described = _reduce(model, plan)
    if epochs:
        trained = small
        # the Distiller freezes its teacher: the user's model gets its own flags back
        flags = [(layer, layer.trainable) for layer in model._flatten_layers()]
        try:
            if teacher_loss is not None:
                trained = distillation.Distiller(teacher=model, student=small,
                                                 distillation_losses=teacher_loss,
                                                 student_loss_weight=0.5)
            trained.compile(keras.optimizers.Adam(learning_rate), loss)
            trained.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
        finally:
            for layer, flag in flags:
                layer.trainable = flag
    qat = quantization.quantize_model(small)
    # the LiteRT score below is the compiled metric's (tfcompress.export.verify)
    qat.compile(keras.optimizers.Adam(learning_rate / 3), loss,
                metrics=[metric] if isinstance(metric, str) and metric != "auc" else None)
    if qat_epochs:
        qat.fit(x, y, batch_size=batch_size, epochs=qat_epochs, verbose=0)
    # calibration covers the tensors QAT put no range on (a composite layer's own ops)
    flatbuffer = export.to_tflite(qat, mode="int8", representative_data=calibration)
    checked = export.verify(flatbuffer, qat, (x_val, y_val), latency_runs=50)
    return qat, flatbuffer, {
        "plan": described, "tflite bytes": len(flatbuffer),
        "gzip bytes": _gzipped(flatbuffer), "params": small.count_params(),
        "metric": float(checked.artifact_score), "metric name": checked.metric,
        "latency ms": checked.latency_ms}
