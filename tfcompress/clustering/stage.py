"""Clustering as a recipe stage: the `"cluster"` section, its checks, and `prepare`."""

from tfcompress.clustering.api import cluster_weights
from tfcompress.clustering.config import CentroidInitialization
from tfcompress.core import settings, techniques
from tfcompress.core.techniques import REQUIRED

DEFAULTS = {"number_of_clusters": REQUIRED, "init": "kmeans_plus_plus", "per_channel": False,
            "preserve_sparsity": False, "skip_layers": [], "epochs": 1}

INITS = [m.name.lower() for m in CentroidInitialization]


def check(s):
    """Raises `ValueError` naming the bad `cluster.<key>`."""
    least = 3 if s["preserve_sparsity"] is True else 2
    settings.check_int("cluster", "number_of_clusters", s["number_of_clusters"], minimum=least)
    if s["init"] not in INITS:
        settings.fail("cluster", "init", s["init"], f"one of {', '.join(INITS)}")
    settings.check_bool("cluster", "per_channel", s["per_channel"])
    settings.check_bool("cluster", "preserve_sparsity", s["preserve_sparsity"])
    settings.check_int("cluster", "epochs", s["epochs"], minimum=1)
    settings.check_names("cluster", "skip_layers", s["skip_layers"],
                         "a list of layer names to leave unclustered, e.g. ['logits']")
    s["skip_layers"] = list(s["skip_layers"])


def prepare(model, recipe, steps_in_stage=None):
    """`(model wrapped for clustering, [])` for the recipe's `"cluster"` section.

    Example:

    ```python
    import keras
    from tfcompress import recipe
    from tfcompress.clustering import stage
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    clustered, _ = stage.prepare(base, recipe.validate({"cluster": {"number_of_clusters": 4}}))
    ```
    """
    c = recipe["cluster"]
    names = {layer.name for layer in model._flatten_layers(include_self=False)}
    unknown = [n for n in c["skip_layers"] if n not in names]
    if unknown:
        raise ValueError(f"'cluster.skip_layers': the model has no layer {unknown}; its layers: "
                         f"{', '.join(sorted(names))}.")
    kwargs = {"weight_names": {n: [] for n in c["skip_layers"]}} if c["skip_layers"] else {}
    clustered = cluster_weights(
        model, c["number_of_clusters"], CentroidInitialization[c["init"].upper()],
        cluster_per_channel=c["per_channel"], preserve_sparsity=c["preserve_sparsity"], **kwargs)
    return clustered, []


STAGE = techniques.Stage("cluster", DEFAULTS, check, prepare, role="transform", order=20)
