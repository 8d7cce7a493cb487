"""TensorBoard summaries of distillation: the loss components as one chart."""

import keras

from tfcompress.core.summaries import Section
from tfcompress.distillation.distiller import Distiller

LOSS_TAGS = r"(epoch|batch)_(total_loss|student_loss|distillation_loss\w*)$"


def distillation_section(model, histograms=False):
    """The distillation part of TensorBoard summaries, or None for other models.

    Keras' TensorBoard already logs every loss component of a `Distiller`
    (`student_loss`, `distillation_loss`, `distillation_loss_<name>`,
    `total_loss`) as metrics; this section adds a chart that draws them
    together, for tfcompress' and Keras' `Distiller`.

    Example:

    ```python
    import tfcompress as tfc
    tfc.distillation.callbacks.distillation_section(None)  # None: not a Distiller
    ```
    """
    if not isinstance(model, (Distiller, keras.distillation.Distiller)):
        return None
    return Section({}, {}, {"loss components": [LOSS_TAGS]})
