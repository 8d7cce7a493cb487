"""A recipe's training stages as models and callbacks: `prepare`, `compile_kwargs`, `pruning_schedule`."""

import os

from tfcompress.recipe.schema import FROM_LOGITS_LOSSES, DISTILL_LOSSES, validate


def pruning_schedule(recipe, steps=None):
    """The `PruningSchedule` of a recipe's `"prune"` section.

    `ConstantSparsity` when `initial_sparsity == final_sparsity`, else
    `PolynomialDecay`. `end_step: null` needs `steps` (the number of training
    steps of the pruning stage; sparsity is reached at 70 % of them), except
    for a constant schedule. `frequency: null` updates the masks 10 times
    between `begin_step` and `end_step`.

    Example:

    ```python
    from tfcompress import recipe
    s = recipe.pruning_schedule({"prune": {"final_sparsity": 0.8, "end_step": 500}})
    assert s.final_sparsity == 0.8 and s.frequency == 50
    ```
    """
    from tfcompress import pruning

    p = validate(recipe)["prune"] if "prune" in recipe else None
    if p is None:
        raise ValueError("The recipe has no 'prune' section.")
    begin, end = p["begin_step"], p["end_step"]
    constant = p["initial_sparsity"] == p["final_sparsity"]
    if end is None and not constant:
        if steps is None:
            raise ValueError(
                "'prune.end_step' is null, so the schedule's length comes from the data: "
                "set 'prune.end_step' (the step at which final_sparsity is reached) to "
                "use prepare(), or use run(), which counts the steps.")
        end = max(begin + 1, begin + int(0.7 * (steps - begin)))
    frequency = p["frequency"]
    if frequency is None:
        frequency = max(1, (end - begin) // 10) if end is not None else 100
    if constant:
        return pruning.ConstantSparsity(p["final_sparsity"], begin_step=begin,
                                        end_step=-1 if end is None else end,
                                        frequency=frequency)
    return pruning.PolynomialDecay(p["initial_sparsity"], p["final_sparsity"],
                                   begin_step=begin, end_step=end, power=p["power"],
                                   frequency=frequency)


def load_teacher(d, safe_mode=True):
    """The recipe's teacher: the given model, or the `.keras` file it names."""
    import keras

    teacher = d["teacher"]
    if isinstance(teacher, keras.Model):
        return teacher
    from tfcompress import report

    path = os.fspath(teacher)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'distill.teacher': no model file at '{path}'.")
    return report.load_model(path, safe_mode=safe_mode)


def prune_stage(model, r, steps=None):
    """`(model wrapped for pruning, its callbacks)` for the recipe's `prune` section."""
    from tfcompress import pruning

    p = r["prune"]
    names = [layer.name for layer in model._flatten_layers(include_self=False)]
    unknown = [n for n in p["skip_layers"] if n not in names]
    if unknown:
        raise ValueError(f"'prune.skip_layers': the model has no layer {unknown}; its layers: "
                         f"{', '.join(names)}.")
    kwargs = {"weight_names": {n: [] for n in p["skip_layers"]}} if p["skip_layers"] else {}
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning_schedule(r, steps), block_size=tuple(p["block_size"]),
        sparsity_m_by_n=None if p["m_by_n"] is None else tuple(p["m_by_n"]), **kwargs)
    return pruned, [pruning.UpdatePruningStep()]


def quantize_stage(model, r):
    """`(quantization-aware model, its callbacks)` for the recipe's `quantize` section."""
    from tfcompress import pruning, quantization
    from tfcompress.core import steps

    q = r["quantize"]
    wrapped = bool(steps.find(model, pruning.PruneLowMagnitude))
    if wrapped and not q["preserve_sparsity"]:
        model, wrapped = pruning.strip_pruning(model), False
    scheme = quantization.Default8BitPrunePreserveQuantizeScheme() if wrapped else None
    qat = quantization.quantize_model(model, scheme=scheme, full_integer=q["full_integer"])
    return qat, [pruning.UpdatePruningStep()] if wrapped else []


def make_distiller(teacher, student, r):
    """A `Distiller` of `student` from `teacher` for the recipe's `distill` section."""
    from tfcompress import distillation

    d = r["distill"]
    name, takes_temperature, takes_from_logits = DISTILL_LOSSES[d["loss"]]
    kwargs = {}
    if takes_temperature and d["temperature"] is not None:
        kwargs["temperature"] = d["temperature"]
    if takes_from_logits:
        kwargs["from_logits"] = r["train"]["from_logits"]
    return distillation.Distiller(teacher, student, getattr(distillation, name)(**kwargs),
                                  student_loss_weight=d["student_loss_weight"])


def prepare(model, recipe, *, safe_mode=True):
    """The model to train and the callbacks for the recipe's first stage, for your own `fit`.

    The stage prepared is:
    - `"prune"` in the recipe: `prune_low_magnitude` with the recipe's schedule
      (see `pruning_schedule`; `prune.end_step` must be set) and
      `[UpdatePruningStep()]`. With `"distill"` too, the model returned is a
      `tfcompress.distillation.Distiller` around the pruned student (its
      `.student` is the pruned model).
    - else `"quantize"`: `quantize_model` (with
      `Default8BitPrunePreserveQuantizeScheme` when `model` still has pruning
      wrappers and `preserve_sparsity` is true, plus `UpdatePruningStep()`).
    - else `"distill"`: a `Distiller(teacher, model)`.
    - else `model` itself and no callbacks.

    The model is not compiled (use `compile_kwargs(recipe)`), and `model`
    itself is not changed. Later stages (QAT after pruning, export) are
    `run()`'s job, or yours: call `prepare` again with a recipe holding the
    next section.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(2)])
    r = {"prune": {"final_sparsity": 0.5, "end_step": 10, "frequency": 2}}
    model, callbacks = recipe.prepare(base, r)
    model.compile(**recipe.compile_kwargs(r))
    model.fit(keras.random.normal((64, 8)), keras.ops.zeros(64, "int32"), epochs=2,
              callbacks=callbacks, verbose=0)
    ```
    """
    r = validate(recipe)
    if "prune" in r:
        pruned, callbacks = prune_stage(model, r)
        if "distill" in r:
            return make_distiller(load_teacher(r["distill"], safe_mode), pruned, r), callbacks
        return pruned, callbacks
    if "quantize" in r:
        return quantize_stage(model, r)
    if "distill" in r:
        return make_distiller(load_teacher(r["distill"], safe_mode), model, r), []
    return model, []


def compile_kwargs(recipe, learning_rate=None):
    """`compile()` arguments from the recipe's `"train"` section: a fresh optimizer, loss, metrics.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(**recipe.compile_kwargs({"train": {"learning_rate": 1e-2}}))
    ```
    """
    import keras

    t = validate(recipe)["train"]
    optimizer = keras.optimizers.get({"class_name": t["optimizer"], "config": {
        "learning_rate": learning_rate or t["learning_rate"]}})
    loss = t["loss"]
    if loss in FROM_LOGITS_LOSSES:
        # by class: `losses.get` of the function name would drop from_logits
        loss = getattr(keras.losses, FROM_LOGITS_LOSSES[loss])(from_logits=t["from_logits"])
    return {"optimizer": optimizer, "loss": loss, "metrics": list(t["metrics"])}
