"""Embedding tables as a recipe stage: the `"embeddings"` section and `prepare`."""

import keras

from tfcompress.core import settings, techniques
from tfcompress.core.steps import StepCallback
from tfcompress.core.techniques import REQUIRED
from tfcompress.embeddings.api import compress_embeddings

#: The methods a recipe can name (`mixed_dim` needs id frequencies from data: Python API).
RECIPE_METHODS = ("rowwise_int8", "rowwise_int4", "qr", "hashed", "prune_rows")
DEFAULTS = {"method": REQUIRED, "layers": None, "min_rows": None, "bits": None,
            "num_buckets": None, "operation": "mult", "num_hashes": 2, "sparsity": 0.5,
            "begin_step": 0, "frequency": 100, "epochs": 1}


def check(s):
    """Raises `ValueError` naming the bad `embeddings.<key>`."""
    if s["method"] == "mixed_dim":
        raise ValueError("'embeddings.method': 'mixed_dim' needs how often each id is read, "
                         "which a recipe does not carry; call tfcompress.embeddings."
                         "compress_embeddings(model, 'mixed_dim', frequencies=...) in Python.")
    if s["method"] not in RECIPE_METHODS:
        settings.fail("embeddings", "method", s["method"], f"one of {list(RECIPE_METHODS)}")
    settings.check_names("embeddings", "layers", s["layers"],
                         "null (every table of at least min_rows rows) or a list of layer names",
                         optional=True)
    settings.check_int("embeddings", "min_rows", s["min_rows"], minimum=1, optional=True)
    if s["bits"] not in (None, 8, 4) or (s["bits"] and s["method"] not in ("qr", "hashed")):
        settings.fail("embeddings", "bits", s["bits"],
                      "null, or 8 / 4 with method 'qr' or 'hashed' (their rows stored int8)")
    settings.check_int("embeddings", "num_buckets", s["num_buckets"], minimum=1, optional=True)
    if s["method"] == "hashed" and s["num_buckets"] is None:
        settings.fail("embeddings", "num_buckets", None, "the rows of the hashed table (int >= 1)")
    if s["operation"] not in ("mult", "add", "concat"):
        settings.fail("embeddings", "operation", s["operation"], "'mult', 'add' or 'concat'")
    settings.check_int("embeddings", "num_hashes", s["num_hashes"], minimum=1)
    settings.check_number("embeddings", "sparsity", s["sparsity"], low=0, high=0.99,
                          text="the fraction of rows prune_rows removes, in (0, 0.99]")
    settings.check_int("embeddings", "begin_step", s["begin_step"])
    settings.check_int("embeddings", "frequency", s["frequency"], minimum=1)
    settings.check_int("embeddings", "epochs", s["epochs"], minimum=1)


def prepare(model, recipe, steps_in_stage=None):
    """`(model with its tables compressed, callbacks)` for the recipe's `"embeddings"` section.

    Example:

    ```python
    from tfcompress import examples, recipe
    from tfcompress.embeddings import stage
    r = recipe.validate({"embeddings": {"method": "qr", "min_rows": 100, "bits": 8}})
    small, callbacks = stage.prepare(examples.click_model(), r)
    ```
    """
    e = recipe["embeddings"]
    method, select = e["method"], {"layers": e["layers"], "min_rows": e["min_rows"]}
    if method == "prune_rows":
        # the pruning folder's schedule, found through Keras's registry (no import between
        # techniques)
        constant = keras.saving.get_registered_object("tfcompress>ConstantSparsity")
        schedule = constant(e["sparsity"], e["begin_step"], frequency=e["frequency"])
        return compress_embeddings(model, method, pruning_schedule=schedule, **select), [
            StepCallback()]
    options = {}
    if method == "qr":
        options = {"num_buckets": e["num_buckets"], "operation": e["operation"]}
    elif method == "hashed":
        options = {"num_buckets": e["num_buckets"], "num_hashes": e["num_hashes"]}
    small = compress_embeddings(model, method, **select, **options)
    if e["bits"]:
        small = compress_embeddings(small, f"rowwise_int{e['bits']}", **select)
    return small, []


#: Before factorization (5) and pruning (10): the tables are replaced first, the rest follows.
STAGE = techniques.Stage("embeddings", DEFAULTS, check, prepare, role="transform", order=3)
