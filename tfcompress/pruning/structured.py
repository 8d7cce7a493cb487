"""`prune_filters`: structured pruning of whole channels, coupled where the graph couples them."""

import keras

from tfcompress.core import channels, copy_layer, is_graph_model, map_layers, rules
from tfcompress.pruning.filters import PruneFilters, warn_missing_gamma


def prune_filters(model, pruning_schedule=None, criterion="l2", layers=None):
    """Wraps a model so that whole channels are pruned inside `fit`, ready to `shrink`.

    The channels pruned are Conv1D/Conv2D/SeparableConv filters, Dense units,
    Embedding columns, MultiHeadAttention heads and keras-hub
    TransformerEncoder feed-forward units. Channels the graph couples are one
    group, found here, not named by you: a conv's filters with the
    BatchNormalization after it, the depthwise conv that follows their
    channels and the next layer's input channels; every branch of a residual
    `Add` (the whole group is pruned together); each input of a
    `Concatenate` at its offset; a `Flatten` into a Dense (one channel is a
    block of rows). A group that reaches a model output or input, or an op
    whose channel rule is unknown, is left alone; `channel_report(model)`
    lists every group and why.

    Train with `UpdatePruningStep()` (and `PruningSummaries` or
    `CompressionSummaries` to watch it), then `shrink(model)` for a plain
    Keras model with the pruned channels removed.

    Args:
        model: a built Sequential or functional model.
        pruning_schedule: a `PruningSchedule`; its sparsity is the fraction
            of each group's channels removed (default `ConstantSparsity(0.5, 0)`).
        criterion: `"l2"`, `"l1"`, `"bn_gamma"` or `"taylor"` (see `PruneFilters`).
        layers: names of the layers (or groups) whose channels to prune;
            default every prunable group.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inputs, keras.layers.Dense(10)(x))
    model = tfc.pruning.prune_filters(
        base, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0), layers=["conv"])
    ```
    """
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise ValueError(
            "prune_filters takes a Sequential or functional keras Model (the channels its "
            f"layers share are read from its graph); got {type(model).__name__}.")
    if not model.built:
        raise ValueError("prune_filters needs a built model: call it on data or build it first.")
    groups = channels.channel_groups(model)
    chosen = _choose(groups, layers)
    if criterion == "bn_gamma":
        warn_missing_gamma([g.name for g in chosen if not any(
            isinstance(u.layer, keras.layers.BatchNormalization) for u in g.uses)])
    per_op = {}
    for group in chosen:
        for use in group.uses:
            per_op.setdefault(id(use.op), (use.op, []))[1].append(use)

    def wrap(layer):
        if id(layer) not in per_op:
            return copy_layer(layer)
        op, uses = per_op[id(layer)]
        return PruneFilters(copy_layer(layer), channels=_specs(op, uses, chosen),
                            pruning_schedule=pruning_schedule, criterion=criterion)

    pruned = map_layers(model, wrap)
    PruneFilters.link(pruned)
    return pruned


def _choose(groups, layers):
    prunable = [g for g in groups.values() if g.prunable]
    if layers is None:
        return prunable
    names = [layers] if isinstance(layers, str) else list(layers)
    chosen = []
    for name in names:
        found = [g for g in groups.values()
                 if g.name == name or any(u.op.name == name for u in g.producers)]
        if not found:
            raise ValueError(
                f"prune_filters: no layer or channel group named '{name}' makes channels. "
                f"Prunable groups: {sorted(g.name for g in prunable)}.")
        for group in found:
            if not group.prunable:
                raise ValueError(
                    f"prune_filters: the channels of '{name}' (group '{group.name}') cannot be "
                    f"removed: they reach {group.reason or 'no layer that reads them'}. Prunable "
                    f"groups: {sorted(g.name for g in prunable)}.")
            if group not in chosen:
                chosen.append(group)
    return chosen


def _specs(op, uses, chosen):
    """The `channels` argument of one wrapper; groups not chosen keep all their channels
    (their segments are named `None`: masked by ones)."""
    names = {g.name for g in chosen}
    specs = []
    for use in uses:
        blocks = [{"segments": [[g if g in names else None, n]
                                for g, n in b.segments], "repeat": b.repeat}
                  for b in use.blocks]
        spec = {"weight": rules.relative_path(use.weight, op), "axis": use.axis,
                "role": use.role, "blocks": blocks}
        if spec not in specs:
            specs.append(spec)
    return specs


def channel_report(model):
    """One row per channel group of `model`: its size, layers, and why it is left alone.

    Returns a pandas DataFrame with columns `group`, `channels`, `prunable`,
    `layers` and `reason`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    tfc.pruning.channel_report(model)
    ```
    """
    import pandas as pd

    rows = []
    for group in channels.channel_groups(model).values():
        rows.append({"group": group.name, "channels": group.size, "prunable": group.prunable,
                     "layers": ", ".join(sorted({u.layer.name for u in group.uses})),
                     "reason": group.reason or ("" if group.prunable else "not read by a weight")})
    return pd.DataFrame(rows)
