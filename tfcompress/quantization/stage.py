"""Quantization-aware training as a recipe stage: the `"quantize"` section and `prepare`."""

from tfcompress.core import steps, strip, techniques
from tfcompress.core.strip import needs_strip
from tfcompress.quantization.api import (
    Default8BitPrunePreserveQuantizeScheme, quantize_model,
)

DEFAULTS = {"preserve_sparsity": True, "epochs": 1, "learning_rate": None,
            "full_integer": False}


def check(s):
    """Raises `ValueError` naming the bad `quantize.<key>`."""
    for key in ("preserve_sparsity", "full_integer"):
        if not isinstance(s[key], bool):
            raise ValueError(f"'quantize.{key}' must be true or false, got {s[key]!r}.")
    epochs = s["epochs"]
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"'quantize.epochs' must be an int >= 1, got {epochs!r}.")
    rate = s["learning_rate"]
    if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool)
                             or not rate > 0):
        raise ValueError("'quantize.learning_rate' must be a number > 0 or null (use "
                         f"train.learning_rate), got {rate!r}.")


def prepare(model, recipe, steps_in_stage=None):
    """`(quantization-aware model, its callbacks)` for the recipe's `"quantize"` section.

    Other techniques' wrappers still in `model` stay inside the quantization
    wrappers (their zeros kept, their schedules still driven) when
    `preserve_sparsity`; otherwise they are stripped first.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.quantization import stage
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    qat, callbacks = stage.prepare(base, recipe.validate({"quantize": {}}))
    ```
    """
    q = recipe["quantize"]
    wrapped = needs_strip(model)
    if wrapped and not q["preserve_sparsity"]:
        model, wrapped = strip(model), False
    scheme = Default8BitPrunePreserveQuantizeScheme() if wrapped else None
    qat = quantize_model(model, scheme=scheme, full_integer=q["full_integer"])
    return qat, [steps.StepCallback()] if steps.step_driven(qat) else []


STAGE = techniques.Stage("quantize", DEFAULTS, check, prepare, role="final", order=30,
                         log_name="qat")
