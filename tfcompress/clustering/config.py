"""The two choices of clustering TFMOT names as enums: centroid initialization and
how the gradients of a cluster's weights reach its centroid."""

import enum


class CentroidInitialization(str, enum.Enum):
    """How a kernel's centroids start (TFMOT's names and values).

    - `LINEAR`: evenly spaced between the kernel's minimum and maximum;
    - `RANDOM`: uniform samples between them (seeded, so repeatable);
    - `DENSITY_BASED`: at evenly spaced quantiles, so dense regions of the
      weight distribution get more centroids;
    - `KMEANS_PLUS_PLUS`: greedy k-means++ seeding, as TFMOT does; per
      channel and with `preserve_sparsity`, k-means++ seeding followed by a
      few Lloyd (k-means) iterations.

    Example:

    ```python
    import tfcompress as tfc
    init = tfc.clustering.CentroidInitialization.DENSITY_BASED
    assert tfc.clustering.CentroidInitialization("CentroidInitialization.DENSITY_BASED") is init
    ```
    """

    LINEAR = "CentroidInitialization.LINEAR"
    RANDOM = "CentroidInitialization.RANDOM"
    DENSITY_BASED = "CentroidInitialization.DENSITY_BASED"
    KMEANS_PLUS_PLUS = "CentroidInitialization.KMEANS_PLUS_PLUS"


class GradientAggregation(str, enum.Enum):
    """How a centroid's gradient is made from its weights' gradients.

    - `SUM`: the sum of the gradients of the weights assigned to it;
    - `AVG`: their mean (the sum divided by the cluster's size).

    Example:

    ```python
    import tfcompress as tfc
    aggregation = tfc.clustering.GradientAggregation.AVG
    ```
    """

    SUM = "GradientAggregation.SUM"
    AVG = "GradientAggregation.AVG"


def parse(enum_class, value, argument):
    """`value` as a member of `enum_class`: a member, its value, or its name (any case)."""
    if isinstance(value, enum_class):
        return value
    if isinstance(value, str):
        for member in enum_class:
            if value in (member.value, member.name) or value.upper() == member.name:
                return member
    names = ", ".join(f"{enum_class.__name__}.{m.name}" for m in enum_class)
    raise ValueError(f"{argument} must be one of {names} (or its name as a string, e.g. "
                     f"'{next(iter(enum_class)).name.lower()}'), got {value!r}.")
