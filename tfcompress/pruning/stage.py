"""Pruning as a recipe stage: the `"prune"` section, its checks, and `prepare`."""

from tfcompress.core import settings, techniques
from tfcompress.core.techniques import REQUIRED
from tfcompress.pruning import schedule as schedules
from tfcompress.pruning.api import prune_low_magnitude
from tfcompress.pruning.callbacks import UpdatePruningStep

DEFAULTS = {"final_sparsity": REQUIRED, "initial_sparsity": 0.0, "begin_step": 0,
            "end_step": None, "frequency": None, "power": 3, "block_size": [1, 1],
            "m_by_n": None, "skip_layers": [], "epochs": 1}


def _fail(key, value, allowed):
    settings.fail("prune", key, value, allowed)


def _int(key, value, minimum=0, optional=False):
    settings.check_int("prune", key, value, minimum, optional)


def check(s):
    """Raises `ValueError` naming the bad `prune.<key>`; normalises pairs to lists."""
    for key in ("final_sparsity", "initial_sparsity"):
        try:
            schedules.check_sparsity(key, s[key])
        except ValueError as error:
            raise ValueError(f"'prune.{key}': {error}") from None
    _int("begin_step", s["begin_step"])
    _int("end_step", s["end_step"], minimum=s["begin_step"] + 1, optional=True)
    _int("frequency", s["frequency"], minimum=1, optional=True)
    settings.check_number("prune", "power", s["power"], low=0, text="a number > 0")
    _int("epochs", s["epochs"], minimum=1)
    block = s["block_size"]
    if (not isinstance(block, (list, tuple)) or len(block) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                       for v in block)):
        _fail("block_size", block, "a pair of ints >= 1, e.g. [1, 1] or [4, 4]")
    m_by_n = s["m_by_n"]
    if m_by_n is not None and (
            not isinstance(m_by_n, (list, tuple)) or len(m_by_n) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in m_by_n)
            or not 0 < m_by_n[0] < m_by_n[1]):
        _fail("m_by_n", m_by_n, "null or a pair [m, n] with 0 < m < n, e.g. [2, 4]")
    if m_by_n is not None and list(block) != [1, 1]:
        raise ValueError("'prune.m_by_n' and 'prune.block_size' cannot be combined; keep "
                         "block_size [1, 1] with m_by_n.")
    settings.check_names("prune", "skip_layers", s["skip_layers"],
                         "a list of layer names to leave dense, e.g. ['click']")
    s["skip_layers"] = list(s["skip_layers"])
    s["block_size"] = list(block)
    s["m_by_n"] = None if m_by_n is None else list(m_by_n)


def schedule(section, steps=None):
    """The `PruningSchedule` of a checked `"prune"` section.

    `ConstantSparsity` when `initial_sparsity == final_sparsity`, else
    `PolynomialDecay`. `end_step: null` needs `steps` (the number of training
    steps of the stage; sparsity is reached at 70 % of them), except for a
    constant schedule. `frequency: null` updates the masks 10 times between
    `begin_step` and `end_step`.

    Example:

    ```python
    from tfcompress.pruning import stage
    s = stage.schedule({**stage.DEFAULTS, "final_sparsity": 0.8}, steps=100)
    assert s.end_step == 70 and s.frequency == 7
    ```
    """
    p = section
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
        return schedules.ConstantSparsity(p["final_sparsity"], begin_step=begin,
                                          end_step=-1 if end is None else end,
                                          frequency=frequency)
    return schedules.PolynomialDecay(p["initial_sparsity"], p["final_sparsity"],
                                     begin_step=begin, end_step=end, power=p["power"],
                                     frequency=frequency)


def prepare(model, recipe, steps_in_stage=None):
    """`(model wrapped for pruning, [UpdatePruningStep()])` for the recipe's `"prune"` section.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.pruning import stage
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    pruned, callbacks = stage.prepare(base, recipe.validate({"prune": {"final_sparsity": 0.5}}),
                                      steps_in_stage=10)
    ```
    """
    p = recipe["prune"]
    names = [layer.name for layer in model._flatten_layers(include_self=False)]
    unknown = [n for n in p["skip_layers"] if n not in names]
    if unknown:
        raise ValueError(f"'prune.skip_layers': the model has no layer {unknown}; its layers: "
                         f"{', '.join(names)}.")
    kwargs = {"weight_names": {n: [] for n in p["skip_layers"]}} if p["skip_layers"] else {}
    pruned = prune_low_magnitude(
        model, pruning_schedule=schedule(p, steps_in_stage), block_size=tuple(p["block_size"]),
        sparsity_m_by_n=None if p["m_by_n"] is None else tuple(p["m_by_n"]), **kwargs)
    return pruned, [UpdatePruningStep()]


STAGE = techniques.Stage("prune", DEFAULTS, check, prepare, role="transform", order=10)
