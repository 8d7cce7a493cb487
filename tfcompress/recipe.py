"""Recipes: the whole compression pipeline stated as one dict (or a JSON / YAML file).

A recipe has up to six sections, each optional (an empty recipe trains nothing and
just writes the model and the report):

```python
recipe = {
    "prune": {"final_sparsity": 0.8, "initial_sparsity": 0.0, "begin_step": 0,
              "end_step": None, "frequency": None, "power": 3,
              "block_size": [1, 1], "m_by_n": None, "epochs": 5},
    "quantize": {"preserve_sparsity": True, "epochs": 2, "learning_rate": None},
    "distill": {"teacher": "teacher.keras", "loss": "logits", "temperature": 4.0,
                "student_loss_weight": 0.3, "epochs": 5},
    "export": {"tflite": ["int8", "float"], "saved_model": True},
    "train": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32,
              "loss": "sparse_categorical_crossentropy", "from_logits": True,
              "metrics": ["accuracy"], "verbose": 0},
    "report": {"metric": "accuracy", "max_samples": None, "latency_runs": 20},
}
```

- `prepare(model, recipe)` builds the *first* training stage for your own `fit`:
  pruning if the recipe has `"prune"` (wrapped in a `Distiller` when it also has
  `"distill"`), otherwise quantization-aware training if it has `"quantize"`,
  otherwise distillation alone.
- `run(model, recipe, data, out_dir)` runs every stage in order (distil and/or
  prune, then QAT, then export) and writes `model.keras`, `model_<mode>.tflite`,
  `saved_model/` and `report.md` into `out_dir`.
- `load(path_or_dict)` reads JSON (YAML too when PyYAML is installed) and
  validates; `validate(recipe)` returns the recipe with every default filled in.

Unknown sections or keys, and bad values, raise `ValueError` naming the key
(`prune.final_sparsity`) and the allowed keys or values.
"""

import copy
import json
import math
import os

_REQUIRED = object()
_AUTO = None

TFLITE_MODES = ("float", "dynamic", "float16", "int8", "int16x8")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "adagrad")
# distill.loss -> (tfcompress.distillation class name, takes a temperature, takes from_logits)
DISTILL_LOSSES = {"logits": ("LogitsDistillation", True, True),
                  "binary": ("BinaryDistillation", True, True),
                  "listwise": ("ListwiseDistillation", True, False),
                  "pairwise": ("PairwiseDistillation", False, False)}
# losses that take `train.from_logits`, by the Keras class that takes it
_FROM_LOGITS_LOSSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                       "categorical_crossentropy": "CategoricalCrossentropy",
                       "binary_crossentropy": "BinaryCrossentropy"}

# section -> key -> default (None: chosen for you, see the docs of each key)
SCHEMA = {
    "prune": {"final_sparsity": _REQUIRED, "initial_sparsity": 0.0, "begin_step": 0,
              "end_step": None, "frequency": None, "power": 3, "block_size": [1, 1],
              "m_by_n": None, "epochs": 1},
    "quantize": {"preserve_sparsity": True, "epochs": 1, "learning_rate": None,
                 "full_integer": False},
    "distill": {"teacher": _REQUIRED, "loss": "logits", "temperature": None,
                "student_loss_weight": 0.5, "epochs": 1},
    "export": {"tflite": [], "saved_model": False, "sparse": False},
    "train": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32,
              "loss": "sparse_categorical_crossentropy", "from_logits": True,
              "metrics": ["accuracy"], "verbose": 0},
    "report": {"metric": "accuracy", "max_samples": None, "latency_runs": 20},
}


# -- loading and validation ------------------------------------------------------

def load(recipe):
    """Reads and validates a recipe: a dict, or a path to a `.json` / `.yaml` / `.yml` file.

    A relative `distill.teacher` path in a file is resolved against the
    file's folder. YAML needs PyYAML (`pip install pyyaml`); JSON always works.

    Returns:
        The validated recipe with all defaults filled in (a new dict).

    Example:

    ```python
    import json
    from tfcompress import recipe
    with open("/tmp/recipe.json", "w") as f:
        json.dump({"prune": {"final_sparsity": 0.5}}, f)
    r = recipe.load("/tmp/recipe.json")
    assert r["prune"]["final_sparsity"] == 0.5 and r["train"]["batch_size"] == 32
    ```
    """
    if isinstance(recipe, dict):
        return validate(recipe)
    path = os.fspath(recipe)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No recipe file at '{path}'.")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ImportError(
                f"'{path}' is YAML, which needs PyYAML: `pip install pyyaml`, or write the "
                "recipe as JSON (.json).") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"'{path}' is not valid YAML: {error}") from None
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"'{path}' is not valid JSON: {error}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"'{path}' must hold a mapping of sections "
                         f"({', '.join(SCHEMA)}), got {type(loaded).__name__}.")
    result = validate(loaded)
    teacher = result.get("distill", {}).get("teacher")
    if isinstance(teacher, str) and not os.path.isabs(teacher):
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), teacher)
        if os.path.exists(beside):
            result["distill"]["teacher"] = beside
    return result


def validate(recipe):
    """Checks a recipe dict and returns a copy with every default filled in.

    Raises:
        ValueError: an unknown section or key (the message names it and lists
            the allowed ones), a missing required key, or a bad value (named
            as `section.key`, with the allowed values).

    Example:

    ```python
    from tfcompress import recipe
    try:
        recipe.validate({"prune": {"final_sparsity": 0.8, "sparsity": 0.5}})
    except ValueError as error:
        assert "prune.sparsity" in str(error) and "final_sparsity" in str(error)
    ```
    """
    if not isinstance(recipe, dict):
        raise ValueError(f"A recipe is a dict of sections ({', '.join(SCHEMA)}), "
                         f"got {type(recipe).__name__}.")
    result = {}
    for section, values in recipe.items():
        if section not in SCHEMA:
            raise ValueError(f"Unknown recipe section '{section}'; allowed sections: "
                             f"{', '.join(SCHEMA)}.")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"Recipe section '{section}' must be a dict of settings "
                             f"(keys: {', '.join(SCHEMA[section])}), got {values!r}.")
        filled = {}
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise ValueError(f"Unknown key '{section}.{key}'; allowed keys in "
                                 f"'{section}': {', '.join(SCHEMA[section])}.")
            filled[key] = value
        for key, default in SCHEMA[section].items():
            if key not in filled:
                if default is _REQUIRED:
                    raise ValueError(f"'{section}.{key}' is required in a '{section}' "
                                     "section.")
                filled[key] = copy.deepcopy(default)
        result[section] = filled
    for section in result:
        _CHECKS[section](result[section])
    result.setdefault("train", copy.deepcopy(SCHEMA["train"]))
    result.setdefault("report", copy.deepcopy(SCHEMA["report"]))
    return result


def _fail(section, key, value, allowed):
    raise ValueError(f"'{section}.{key}' must be {allowed}, got {value!r}.")


def _int(section, key, value, minimum=0, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(section, key, value, f"an int >= {minimum}" + (" or null" if optional else ""))


def _number(section, key, value, low=None, high=None, optional=False, text=None):
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None and not value > low:
        ok = False
    if ok and high is not None and not value <= high:
        ok = False
    if not ok:
        _fail(section, key, value, text or "a number")


def _bool(section, key, value):
    if not isinstance(value, bool):
        _fail(section, key, value, "true or false")


def _check_prune(s):
    from tfcompress.pruning import schedule

    for key in ("final_sparsity", "initial_sparsity"):
        try:
            schedule._check_sparsity(key, s[key])
        except ValueError as error:
            raise ValueError(f"'prune.{key}': {error}") from None
    _int("prune", "begin_step", s["begin_step"])
    _int("prune", "end_step", s["end_step"], minimum=s["begin_step"] + 1, optional=True)
    _int("prune", "frequency", s["frequency"], minimum=1, optional=True)
    _number("prune", "power", s["power"], low=0, text="a number > 0")
    _int("prune", "epochs", s["epochs"], minimum=1)
    block = s["block_size"]
    if (not isinstance(block, (list, tuple)) or len(block) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                       for v in block)):
        _fail("prune", "block_size", block, "a pair of ints >= 1, e.g. [1, 1] or [4, 4]")
    m_by_n = s["m_by_n"]
    if m_by_n is not None and (
            not isinstance(m_by_n, (list, tuple)) or len(m_by_n) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in m_by_n)
            or not 0 < m_by_n[0] < m_by_n[1]):
        _fail("prune", "m_by_n", m_by_n, "null or a pair [m, n] with 0 < m < n, e.g. [2, 4]")
    if m_by_n is not None and list(block) != [1, 1]:
        raise ValueError("'prune.m_by_n' and 'prune.block_size' cannot be combined; keep "
                         "block_size [1, 1] with m_by_n.")
    s["block_size"] = list(block)
    s["m_by_n"] = None if m_by_n is None else list(m_by_n)


def _check_quantize(s):
    _bool("quantize", "preserve_sparsity", s["preserve_sparsity"])
    _bool("quantize", "full_integer", s["full_integer"])
    _int("quantize", "epochs", s["epochs"], minimum=1)
    _number("quantize", "learning_rate", s["learning_rate"], low=0, optional=True,
            text="a number > 0 or null (use train.learning_rate)")


def _check_distill(s):
    import keras

    teacher = s["teacher"]
    if not isinstance(teacher, (str, os.PathLike, keras.Model)):
        _fail("distill", "teacher", teacher, "a .keras file path or a keras.Model")
    if s["loss"] not in DISTILL_LOSSES:
        _fail("distill", "loss", s["loss"], f"one of {list(DISTILL_LOSSES)}")
    _number("distill", "temperature", s["temperature"], low=0, optional=True,
            text="a number > 0, or null for the loss's own default")
    if s["loss"] == "pairwise" and s["temperature"] is not None:
        _fail("distill", "temperature", s["temperature"],
              "null with loss 'pairwise' (a RankNet loss has no temperature)")
    value = s["student_loss_weight"]
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value <= 1):
        _fail("distill", "student_loss_weight", value, "a number in [0, 1]")
    _int("distill", "epochs", s["epochs"], minimum=1)


def _check_export(s):
    modes = s["tflite"]
    if isinstance(modes, str):
        modes = [modes]
    if not isinstance(modes, (list, tuple)):
        _fail("export", "tflite", modes, f"a list of TFLite modes from {list(TFLITE_MODES)}")
    for mode in modes:
        if mode not in TFLITE_MODES:
            raise ValueError(f"'export.tflite' has unknown mode {mode!r}; allowed modes: "
                             f"{', '.join(TFLITE_MODES)}.")
    if len(set(modes)) != len(modes):
        raise ValueError(f"'export.tflite' lists a mode twice: {list(modes)}.")
    s["tflite"] = list(modes)
    _bool("export", "saved_model", s["saved_model"])
    _bool("export", "sparse", s["sparse"])


def _check_train(s):
    if s["optimizer"] not in OPTIMIZERS:
        _fail("train", "optimizer", s["optimizer"], f"one of {', '.join(OPTIMIZERS)}")
    _number("train", "learning_rate", s["learning_rate"], low=0, text="a number > 0")
    _int("train", "batch_size", s["batch_size"], minimum=1)
    _int("train", "verbose", s["verbose"], minimum=0)
    _bool("train", "from_logits", s["from_logits"])
    import keras

    if not isinstance(s["loss"], str):
        _fail("train", "loss", s["loss"], "a Keras loss name, e.g. "
              "'sparse_categorical_crossentropy' or 'mse'")
    try:
        keras.losses.get(s["loss"])
    except (ValueError, TypeError):
        _fail("train", "loss", s["loss"], "a Keras loss name, e.g. "
              "'sparse_categorical_crossentropy', 'binary_crossentropy' or 'mse'")
    metrics = s["metrics"]
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) for m in metrics):
        _fail("train", "metrics", metrics, "a list of Keras metric names, e.g. ['accuracy']")
    s["metrics"] = list(metrics)


def _check_report(s):
    if not isinstance(s["metric"], str):
        _fail("report", "metric", s["metric"], "'accuracy', 'auc' or a Keras metric name")
    _int("report", "max_samples", s["max_samples"], minimum=1, optional=True)
    _int("report", "latency_runs", s["latency_runs"], minimum=1)


_CHECKS = {"prune": _check_prune, "quantize": _check_quantize, "distill": _check_distill,
           "export": _check_export, "train": _check_train, "report": _check_report}


# -- building blocks -------------------------------------------------------------

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


def _teacher(d, safe_mode=True):
    import keras

    teacher = d["teacher"]
    if isinstance(teacher, keras.Model):
        return teacher
    from tfcompress import report

    path = os.fspath(teacher)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'distill.teacher': no model file at '{path}'.")
    return report.load_model(path, safe_mode=safe_mode)


def _prune(model, r, steps=None):
    from tfcompress import pruning

    p = r["prune"]
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning_schedule(r, steps), block_size=tuple(p["block_size"]),
        sparsity_m_by_n=None if p["m_by_n"] is None else tuple(p["m_by_n"]))
    return pruned, [pruning.UpdatePruningStep()]


def _quantize(model, r):
    from tfcompress import pruning, quantization
    from tfcompress.core import steps

    q = r["quantize"]
    wrapped = bool(steps.find(model, pruning.PruneLowMagnitude))
    if wrapped and not q["preserve_sparsity"]:
        model, wrapped = pruning.strip_pruning(model), False
    scheme = quantization.Default8BitPrunePreserveQuantizeScheme() if wrapped else None
    qat = quantization.quantize_model(model, scheme=scheme, full_integer=q["full_integer"])
    return qat, [pruning.UpdatePruningStep()] if wrapped else []


def _distiller(teacher, student, r):
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
        pruned, callbacks = _prune(model, r)
        if "distill" in r:
            return _distiller(_teacher(r["distill"], safe_mode), pruned, r), callbacks
        return pruned, callbacks
    if "quantize" in r:
        return _quantize(model, r)
    if "distill" in r:
        return _distiller(_teacher(r["distill"], safe_mode), model, r), []
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
    if loss in _FROM_LOGITS_LOSSES:
        # by class: `losses.get` of the function name would drop from_logits
        loss = getattr(keras.losses, _FROM_LOGITS_LOSSES[loss])(from_logits=t["from_logits"])
    return {"optimizer": optimizer, "loss": loss, "metrics": list(t["metrics"])}


# -- the runner ------------------------------------------------------------------

def _split(data):
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError("data must be (x, y) or a dict with x, y and optionally "
                             "x_val, y_val, x_test, y_test.")
        return {"x": data[0], "y": data[1]}
    if not isinstance(data, dict) or "x" not in data or data.get("y") is None:
        raise ValueError("data must be (x, y) or a dict with arrays 'x' and 'y' (and "
                         "optionally 'x_val', 'y_val', 'x_test', 'y_test').")
    for split in ("val", "test"):
        if (f"x_{split}" in data) != (f"y_{split}" in data):
            raise ValueError(f"data has only one of 'x_{split}' and 'y_{split}'; give both.")
    return data


def run(model, recipe, data, out_dir, *, safe_mode=True, overwrite=False):
    """Runs a whole recipe on `model` and writes every artifact and the report into `out_dir`.

    Stages, each only if its section is present:
    1. distil and/or prune: one `fit` of `prune.epochs` epochs (or
       `distill.epochs` when distilling without pruning). With both, the
       teacher is distilled into the pruned student in the same fit.
    2. quantize: quantization-aware training for `quantize.epochs` epochs on
       the labels, keeping pruned zeros when `preserve_sparsity`.
    3. export: `model.keras` (pruning wrappers stripped; quantization-aware
       layers kept when QAT ran) and `model_<mode>.tflite` for each
       `export.tflite` mode (int8/int16x8 calibrated on `x` unless QAT ran),
       `saved_model/` if `export.saved_model`. When QAT ran, `int8` comes
       from the QAT model and the float exports (float, dynamic, float16,
       int16x8, SavedModel) from the pruned model before QAT, which is also
       saved as `model_float.keras`.
    Each training stage logs to TensorBoard under `out_dir/logs/train` and
    `out_dir/logs/qat` (`tfcompress.CompressionSummaries`: sparsity, QAT
    ranges, distillation losses). Finally `report.md`: `tfcompress.report.compare` over the input model and
    every artifact, on `x_test, y_test` (else `x_val, y_val`, else `x, y`).

    Args:
        model: a Sequential or functional Keras 3 model (not changed).
        recipe: a recipe dict or file path (see `load`).
        data: `(x, y)` or a dict with `x`, `y` and optionally `x_val`, `y_val`
            (validation during fit) and `x_test`, `y_test` (the report).
        out_dir: created if needed; existing artifacts are replaced only with
            `overwrite=True`.
        safe_mode: load a teacher file in Keras safe mode.

    Returns:
        The report as a pandas DataFrame (also written as `out_dir/report.md`).

    Example:

    ```python
    from tfcompress import examples, recipe
    (x, y), _, (xt, yt) = examples.digits()
    table = recipe.run(examples.digits_cnn(width=8),
                       {"prune": {"final_sparsity": 0.5}, "quantize": {},
                        "export": {"tflite": ["int8"]}},
                       {"x": x, "y": y, "x_test": xt, "y_test": yt},
                       "/tmp/recipe_out", overwrite=True)
    ```
    """
    from tfcompress import export, pruning, report

    r = load(recipe)
    data = _split(data)
    x, y = data["x"], data["y"]
    t = r["train"]
    names = ["model.keras", "model_float.keras", "report.md", "logs"] + [
        f"model_{m}.tflite" for m in r.get("export", {}).get("tflite", [])]
    if r.get("export", {}).get("saved_model"):
        names.append("saved_model")
    os.makedirs(out_dir, exist_ok=True)
    if not overwrite:
        taken = [n for n in names if os.path.lexists(os.path.join(out_dir, n))]
        if taken:
            raise FileExistsError(f"'{out_dir}' already holds {', '.join(taken)}; pass "
                                  "overwrite=True (--overwrite) to replace them.")
    _replace(os.path.join(out_dir, "logs"))
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    fit = dict(batch_size=t["batch_size"], validation_data=validation, verbose=t["verbose"])
    steps_per_epoch = math.ceil(len(x) / t["batch_size"])

    current = model
    if "prune" in r or "distill" in r:
        epochs = r["prune"]["epochs"] if "prune" in r else r["distill"]["epochs"]
        callbacks = []
        if "prune" in r:
            current, callbacks = _prune(current, r, steps=steps_per_epoch * epochs)
        trainee = current
        if "distill" in r:
            trainee = _distiller(_teacher(r["distill"], safe_mode), current, r)
        trainee.compile(**compile_kwargs(r))
        trainee.fit(x, y, epochs=epochs, callbacks=callbacks + [_summaries(out_dir, "train")], **fit)
    float_model = pruning.strip_pruning(current) if current is not model else model
    if "quantize" in r:
        current, callbacks = _quantize(current, r)
        current.compile(**compile_kwargs(r, r["quantize"]["learning_rate"]))
        current.fit(x, y, epochs=r["quantize"]["epochs"],
                    callbacks=callbacks + [_summaries(out_dir, "qat")], **fit)
    final = pruning.strip_pruning(current) if "quantize" in r else float_model

    artifacts = {}
    keras_path = os.path.join(out_dir, "model.keras")
    _replace(keras_path)
    final.save(keras_path)
    artifacts["model.keras"] = keras_path
    if "quantize" in r:  # the float exports come from the model before QAT
        path = os.path.join(out_dir, "model_float.keras")
        _replace(path)
        float_model.save(path)
        artifacts["model_float.keras"] = path
    e = r.get("export", SCHEMA["export"])
    for mode in e["tflite"]:
        path = os.path.join(out_dir, f"model_{mode}.tflite")
        calibration = x if mode in ("int8", "int16x8") else None
        if mode == "int8" and "quantize" in r:
            calibration = None  # the QAT ranges are the calibration
        source = final if mode == "int8" else float_model
        export.to_tflite(source, path, mode=mode, representative_data=calibration,
                         sparse=e["sparse"], overwrite=True)
        artifacts[os.path.basename(path)] = path
    if e["saved_model"]:
        path = os.path.join(out_dir, "saved_model")
        export.to_saved_model(float_model, path, overwrite=True)
        artifacts["saved_model"] = path

    for split in ("test", "val", ""):
        key = f"x_{split}" if split else "x"
        if key in data:
            scored = (data[key], data[f"y_{split}" if split else "y"])
            break
    rep = r["report"]
    rows = {f"input ({getattr(model, 'name', 'model')})": model, **artifacts}
    table = report.compare(rows, scored, metric=rep["metric"], max_samples=rep["max_samples"],
                           latency_runs=rep["latency_runs"])
    stages = [s for s in ("distill", "prune", "quantize") if s in r] + ["export"]
    text = (f"# tfcompress recipe report\n\nstages: {' → '.join(stages)}; scored on "
            f"{len(scored[1])} samples ({'x_' + split if split else 'x'}).\n\n"
            + report.to_markdown(table) + "\n")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return table


def _summaries(out_dir, stage):
    from tfcompress.summaries import CompressionSummaries

    return CompressionSummaries(os.path.join(out_dir, "logs", stage))


def _replace(path):
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
