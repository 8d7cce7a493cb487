"""Structured pruning as a recipe stage: the `"prune_filters"` section, then `shrink`."""

from tfcompress.core import settings, shrink, techniques
from tfcompress.core.techniques import REQUIRED
from tfcompress.pruning import stage as magnitude_stage
from tfcompress.pruning.callbacks import UpdatePruningStep
from tfcompress.pruning.filters import CRITERIA
from tfcompress.pruning.structured import prune_filters

DEFAULTS = {"fraction": REQUIRED, "criterion": "l2", "layers": None, "begin_step": 0,
            "end_step": None, "frequency": None, "epochs": 1}


def check(s):
    """Raises `ValueError` naming the bad `prune_filters.<key>`."""
    settings.check_number("prune_filters", "fraction", s["fraction"], low=0, high=0.99,
                          text="the fraction of each channel group to remove, in (0, 0.99]")
    if s["criterion"] not in CRITERIA:
        settings.fail("prune_filters", "criterion", s["criterion"], f"one of {list(CRITERIA)}")
    settings.check_names("prune_filters", "layers", s["layers"],
                         "null (every prunable group) or a list of layer names", optional=True)
    settings.check_int("prune_filters", "begin_step", s["begin_step"])
    settings.check_int("prune_filters", "end_step", s["end_step"], minimum=s["begin_step"] + 1,
                       optional=True)
    settings.check_int("prune_filters", "frequency", s["frequency"], minimum=1, optional=True)
    settings.check_int("prune_filters", "epochs", s["epochs"], minimum=1)


def prepare(model, recipe, steps_in_stage=None):
    """`(model wrapped by prune_filters, [UpdatePruningStep()])` for the recipe's section.

    The fraction is reached at 70 % of the stage's steps (polynomial decay,
    like `"prune"`), so the last 30 % fine-tune the pruned channels.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.pruning import filters_stage
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    section = recipe.validate({"prune_filters": {"fraction": 0.5}})
    pruned, callbacks = filters_stage.prepare(base, section, steps_in_stage=10)
    ```
    """
    p = recipe["prune_filters"]
    schedule = magnitude_stage.schedule(
        {**magnitude_stage.DEFAULTS, "final_sparsity": p["fraction"],
         **{k: p[k] for k in ("begin_step", "end_step", "frequency")}}, steps_in_stage)
    pruned = prune_filters(model, pruning_schedule=schedule, criterion=p["criterion"],
                           layers=p["layers"])
    return pruned, [UpdatePruningStep()]


STAGE = techniques.Stage("prune_filters", DEFAULTS, check, prepare, role="transform", order=12,
                         finish=shrink)
