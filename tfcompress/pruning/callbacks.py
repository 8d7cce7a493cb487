"""Callbacks that drive pruning inside `fit` and log it to TensorBoard."""

import numpy as np

from tfcompress.core import find, steps
from tfcompress.core.summaries import Section, Summaries
from tfcompress.pruning.filters import PruneFilters
from tfcompress.pruning.wrapper import PruneLowMagnitude


class UpdatePruningStep(steps.StepCallback):
    """Drives the pruning schedule; required when training a pruned model.

    Binds the optimizer's step counter to every `PruneLowMagnitude` wrapper
    (nested models and Distiller students included), so masks update inside
    the compiled train step at exactly the schedule's steps. Training a pruned
    model without it raises an error naming this callback. It is
    `tfcompress.core.steps.StepCallback` under TFMOT's name: it drives every
    step-driven wrapper the model holds, whatever the technique.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc

    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
        pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    ```
    """


def sparsity_logs(model):
    """Current pruning scalars of `model`: per mask, global, and step.

    Returns a dict `{tag: float}`: `<wrapper>/<mask>` for every mask,
    `global_sparsity` (zeros over all masked weights) and `pruning_step`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    tfc.pruning.sparsity_logs(model)["global_sparsity"]  # 0.0
    ```
    """
    logs, zeros, total, step = {}, 0.0, 0, 0
    for wrapper in find(model, PruneLowMagnitude):
        if not wrapper.built:
            continue
        step = max(step, int(np.asarray(wrapper.pruning_step)))
        for mask in wrapper.masks:
            value = np.asarray(mask)
            logs[f"{wrapper.name}/{mask.name}"] = float(1.0 - value.mean())
            zeros += float(value.size - value.sum())
            total += value.size
    logs["global_sparsity"] = zeros / total if total else 0.0
    logs["pruning_step"] = float(step)
    return logs


def pruning_section(model, histograms=False):
    """The pruning part of TensorBoard summaries, or None without pruning.

    Scalars are `sparsity_logs(model)` (`pruning_step` logged as `step`);
    histograms, when asked for, hold each pruned weight's kept (non-zero mask)
    values as `kept/<wrapper>/<weight>`; the charts draw every mask's
    sparsity as one multi-line chart, beside the global sparsity.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    sorted(tfc.pruning.callbacks.pruning_section(model).charts)
    # ['global sparsity', 'sparsity per layer']
    ```
    """
    wrappers = [w for w in find(model, PruneLowMagnitude) if w.built]
    if not wrappers:
        return None
    scalars = {("step" if tag == "pruning_step" else tag): value
               for tag, value in sparsity_logs(model).items()}
    kept = {}
    for wrapper in wrappers if histograms else ():
        for weight, mask in zip(wrapper.targets, wrapper.masks):
            kept[f"kept/{wrapper.name}/{weight.name}"] = np.asarray(weight)[np.asarray(mask) != 0]
    charts = {"sparsity per layer": [r"pruning/.*_mask$"],
              "global sparsity": [r"pruning/global_sparsity$"]}
    return Section(scalars, kept, charts)


def channel_logs(model):
    """`{"<group>": fraction of its channels removed}` for every structured-pruning group.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.pruning.prune_filters(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="hidden"), keras.layers.Dense(2)]))
    tfc.pruning.callbacks.channel_logs(model)   # {'hidden': 0.0}
    """
    logs = {}
    for wrapper in find(model, PruneFilters):
        if wrapper.built:
            for group, mask in wrapper.channel_masks.items():
                logs.setdefault(group, float(1.0 - np.asarray(mask).mean()))
    return logs


def channels_section(model, histograms=False):
    """The structured-pruning part of TensorBoard summaries, or None without it.

    Scalars `removed/<group>`: the fraction of each channel group removed
    (logged as `structured_pruning/removed/<group>`), drawn as one
    multi-line chart, and `step`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.pruning.prune_filters(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)]))
    sorted(tfc.pruning.callbacks.channels_section(model).charts)  # ['channels removed']
    ```
    """
    wrappers = [w for w in find(model, PruneFilters) if w.built]
    if not wrappers:
        return None
    scalars = {f"removed/{group}": value for group, value in channel_logs(model).items()}
    scalars["step"] = float(max(int(np.asarray(w.pruning_step)) for w in wrappers))
    return Section(scalars, {}, {"channels removed": [r"structured_pruning/removed/.*"]})


class PruningSummaries(Summaries):
    """TensorBoard callback that also logs per-layer and global sparsity.

    Everything `keras.callbacks.TensorBoard` logs, plus, under
    `<log_dir>/pruning`, the scalars `pruning/<wrapper>/<mask>` (sparsity of
    each mask), `pruning/global_sparsity` and `pruning/step`, at each epoch's
    begin and end and, when `update_freq` is an int, every `update_freq`
    training steps. The x axis is the optimizer's step count. At each epoch's
    end it also writes histograms of the kept weights,
    `pruning/kept/<wrapper>/<weight>` (`histograms=False` turns them off).
    TensorBoard's custom scalars dashboard draws every layer's sparsity as
    one multi-line chart. `tfcompress.CompressionSummaries` logs pruning,
    QAT ranges and distillation losses together.

    Example:

    ```python
    import keras, numpy as np, tempfile
    import tfcompress as tfc

    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(),
        tfc.pruning.PruningSummaries(log_dir=tempfile.mkdtemp())])
    ```
    """

    sections = {"pruning": pruning_section, "structured_pruning": channels_section}
