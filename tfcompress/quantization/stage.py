"""Quantization-aware training as a recipe stage: the `"quantize"` section and `prepare`."""

from tfcompress.core import settings, steps, strip, techniques
from tfcompress.core.strip import needs_strip
from tfcompress.quantization.api import (
    Default8BitPrunePreserveQuantizeScheme, quantize_model,
)

DEFAULTS = {"preserve_sparsity": True, "epochs": 1, "learning_rate": None,
            "full_integer": False}


def check(s):
    """Raises `ValueError` naming the bad `quantize.<key>`."""
    settings.check_bool("quantize", "preserve_sparsity", s["preserve_sparsity"])
    settings.check_bool("quantize", "full_integer", s["full_integer"])
    settings.check_int("quantize", "epochs", s["epochs"], minimum=1)
    settings.check_number("quantize", "learning_rate", s["learning_rate"], low=0, optional=True,
                          text="a number > 0 or null (use train.learning_rate)")


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
