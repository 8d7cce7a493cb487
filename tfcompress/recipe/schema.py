"""The recipe format: sections, keys, defaults and allowed values; `load` and `validate`."""

import collections.abc
import copy
import json
import os

from tfcompress.core import techniques
from tfcompress.core.settings import check_bool as _bool, check_int as _int
from tfcompress.core.settings import check_number as _number, fail as _fail

TFLITE_MODES = ("float", "dynamic", "float16", "int8", "int16x8")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "adagrad")
# losses that take `train.from_logits`, by the Keras class that takes it
FROM_LOGITS_LOSSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                       "categorical_crossentropy": "CategoricalCrossentropy",
                       "binary_crossentropy": "BinaryCrossentropy"}

# The workflow's own sections; each technique's stage adds its section
# (`tfcompress.core.techniques.Stage.defaults`), e.g. "prune", "quantize", "distill".
WORKFLOW = {
    "export": {"tflite": [], "saved_model": False, "sparse": False},
    "train": {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32,
              "loss": "sparse_categorical_crossentropy", "from_logits": True,
              "metrics": ["accuracy"], "verbose": 0},
    "report": {"metric": "accuracy", "max_samples": None, "latency_runs": 20},
    # tfcompress.auto.compress: a budget instead of techniques (no technique sections beside it)
    "auto": {"max_bytes": None, "max_gzip_bytes": None, "max_latency_ms": None,
             "max_params": None, "max_drop": None,
             "metric": "accuracy", "epochs": 3, "qat_epochs": 2, "distill": False, "tries": 3},
}


class _Schema(collections.abc.Mapping):
    """section -> key -> default (None: chosen for you; see each key's docs), for every
    registered technique's stage and the workflow sections, as registered now."""

    def _sections(self):
        stages = sorted(techniques.stages().values(), key=lambda st: (st.order, st.key))
        return {**{st.key: st.defaults for st in stages}, **WORKFLOW}

    def __getitem__(self, key):
        return self._sections()[key]

    def __iter__(self):
        return iter(self._sections())

    def __len__(self):
        return len(self._sections())


SCHEMA = _Schema()
_REQUIRED = techniques.REQUIRED


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
    stages = techniques.stages()
    for section in result:
        check = stages[section].check if section in stages else _CHECKS[section]
        check(result[section])
    beside = sorted(set(result) & (set(stages) | {"export"}))
    if "auto" in result and beside:
        raise ValueError(f"An 'auto' section chooses the techniques and writes "
                         f"model_int8.tflite itself; remove the section(s) {beside}, or the "
                         "'auto' section to run them yourself.")
    result.setdefault("train", copy.deepcopy(SCHEMA["train"]))
    result.setdefault("report", copy.deepcopy(SCHEMA["report"]))
    return result


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


def _check_auto(s):
    budget = ("max_bytes", "max_gzip_bytes", "max_latency_ms", "max_params")
    if all(s[key] is None for key in budget):
        raise ValueError("An 'auto' section needs a budget: 'auto.max_bytes' (int8 TFLite "
                         "bytes), 'auto.max_gzip_bytes', 'auto.max_params' and/or "
                         "'auto.max_latency_ms'.")
    _int("auto", "max_bytes", s["max_bytes"], minimum=1, optional=True)
    _int("auto", "max_gzip_bytes", s["max_gzip_bytes"], minimum=1, optional=True)
    _int("auto", "max_params", s["max_params"], minimum=1, optional=True)
    _number("auto", "max_latency_ms", s["max_latency_ms"], low=0, optional=True,
            text="a number of milliseconds > 0")
    _number("auto", "max_drop", s["max_drop"], low=None, optional=True)
    if not isinstance(s["metric"], str):
        _fail("auto", "metric", s["metric"], "'accuracy', 'auc' or a Keras metric name")
    _int("auto", "epochs", s["epochs"], minimum=0)
    _int("auto", "qat_epochs", s["qat_epochs"], minimum=0)
    _int("auto", "tries", s["tries"], minimum=1)
    _bool("auto", "distill", s["distill"])


_CHECKS = {"export": _check_export, "train": _check_train, "report": _check_report,
           "auto": _check_auto}
