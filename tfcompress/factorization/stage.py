"""Factorization as a recipe stage: the `"factorize"` section, its checks, and `prepare`."""

from tfcompress.core import settings, techniques
from tfcompress.factorization.api import factorize

DEFAULTS = {"rank": None, "energy": None, "ratio": None, "layers": None, "epochs": 1}


def _fail(key, value, allowed):
    settings.fail("factorize", key, value, allowed)


def _is_rank(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check(s):
    """Raises `ValueError` naming the bad `factorize.<key>`; normalises `layers` to a list."""
    given = [k for k in ("rank", "energy", "ratio") if s[k] is not None]
    if len(given) != 1:
        got = "none" if not given else ", ".join(f"'factorize.{k}'" for k in given)
        raise ValueError(
            "A 'factorize' section sets exactly one of 'factorize.rank', 'factorize.energy', "
            f"'factorize.ratio' (got {got}), e.g. {{\"factorize\": {{\"energy\": 0.9}}}}.")
    rank = s["rank"]
    if rank is not None:
        if isinstance(rank, dict):
            if not rank or not all(isinstance(k, str) and _is_rank(v) for k, v in rank.items()):
                _fail("rank", rank, "an int >= 1 or a mapping {layer name: int >= 1}")
            if s["layers"] is not None:
                raise ValueError("'factorize.rank' is a mapping, which already names the layers; "
                                 "leave 'factorize.layers' null.")
            s["rank"] = dict(rank)
        elif not _is_rank(rank):
            _fail("rank", rank, "an int >= 1 or a mapping {layer name: int >= 1}")
    for key in ("energy", "ratio"):
        settings.check_number("factorize", key, s[key], low=0, high=1, optional=True,
                              text="a number in (0, 1] or null")
    layers = s["layers"]
    settings.check_names("factorize", "layers", layers,
                         "null (every Dense, EinsumDense and Embedding) or a list of layer "
                         "names, e.g. ['user_embedding']", optional=True)
    if layers is not None:
        s["layers"] = list(layers)
    settings.check_int("factorize", "epochs", s["epochs"], minimum=1)


def prepare(model, recipe, steps_in_stage=None):
    """`(factorize(model, ...), [])` for the recipe's `"factorize"` section.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.factorization import stage
    base = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32, name="hidden"),
                             keras.layers.Dense(2, name="logits")])
    r = recipe.validate({"factorize": {"ratio": 0.25, "layers": ["hidden"]}})
    small, callbacks = stage.prepare(base, r)
    assert callbacks == [] and small.get_layer("hidden_lowrank").units == 4
    ```
    """
    f = recipe["factorize"]
    key = "rank" if isinstance(f["rank"], dict) else "layers"
    try:
        factorized = factorize(model, rank=f["rank"], energy=f["energy"], ratio=f["ratio"],
                               layers=f["layers"])
    except ValueError as error:
        text = str(error)
        if f[key] is not None and ("has no layer" in text or text.startswith("Layer '")):
            raise ValueError(f"'factorize.{key}': {text}") from None
        raise
    return factorized, []


#: Runs before pruning (order 10) and clustering (20): prune the factors, not the kernel.
STAGE = techniques.Stage("factorize", DEFAULTS, check, prepare, role="transform", order=5)
