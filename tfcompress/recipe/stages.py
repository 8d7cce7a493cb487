"""A recipe's stages as models and callbacks: `prepare`, `compile_kwargs`, `pruning_schedule`.

The stages come from the techniques (`tfcompress.core.techniques.stages()`);
this module orders them and loads what a file names (a teacher).
"""

import os

from tfcompress.core import techniques
from tfcompress.recipe.schema import FROM_LOGITS_LOSSES, validate


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
    from tfcompress.pruning import stage

    if "prune" not in recipe:
        raise ValueError("The recipe has no 'prune' section.")
    return stage.schedule(validate(recipe)["prune"], steps)


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


def present(r, role):
    """The stages of `role` that the validated recipe `r` turns on, in order."""
    found = [st for st in techniques.stages().values() if st.key in r and st.role == role]
    return sorted(found, key=lambda st: (st.order, st.key))


def with_teacher(r, safe_mode=True):
    """`r` with `distill.teacher` loaded (a new dict when there is a file to load)."""
    if "distill" not in r or not isinstance(r["distill"]["teacher"], (str, os.PathLike)):
        return r
    return {**r, "distill": {**r["distill"], "teacher": load_teacher(r["distill"], safe_mode)}}


def prepare(model, recipe, *, safe_mode=True):
    """The model to train and the callbacks for the recipe's first stage, for your own `fit`.

    The stage prepared is:
    - the recipe's training-time transforms (`"prune"`, and any other
      technique's transform stage), applied in order, with their callbacks
      (`[StepCallback()]` for pruning). With `"distill"` too, the model
      returned is a `tfcompress.distillation.Distiller` around the wrapped
      student (its `.student`). The pruning schedule needs `prune.end_step`.
    - else a final stage (`"quantize"`): `quantize_model` (keeping pruning
      wrappers and their zeros when `model` still has them and
      `preserve_sparsity` is true, with a step callback).
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
    r = with_teacher(validate(recipe), safe_mode)
    stages = present(r, "transform") or present(r, "final")[:1]
    callbacks = []
    for st in stages:
        model, more = st.prepare(model, r)
        callbacks += more
    if stages and stages[0].role == "final":
        return model, callbacks
    for st in present(r, "teacher"):
        model, more = st.prepare(model, r)
        callbacks += more
    return model, callbacks


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
