"""One TensorBoard callback for every technique a model combines."""

from tfcompress.core.summaries import Summaries
from tfcompress.distillation.callbacks import distillation_section
from tfcompress.pruning.callbacks import pruning_section
from tfcompress.quantization.callbacks import quantization_section


class CompressionSummaries(Summaries):
    """`keras.callbacks.TensorBoard` plus pruning, QAT and distillation views.

    Writes what `keras.callbacks.TensorBoard` writes, and for whatever the
    model holds:
    - pruning (`<log_dir>/pruning`): sparsity per mask as one multi-line
      chart, global sparsity, the pruning step, and histograms of the kept
      weights at each epoch's end;
    - QAT (`<log_dir>/quantization`): every activation range's min and max,
      one chart per layer;
    - distillation (a `Distiller`): its loss components drawn as one chart.

    Charts are TensorBoard custom scalars layouts (the "Custom Scalars"
    tab). Scalars go out at each epoch's begin and end and every
    `update_freq` steps when that is an int, on the optimizer's step axis.

    Example:

    ```python
    import keras, numpy as np, tempfile
    import tfcompress as tfc

    def mlp(width):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, "relu"),
                                 keras.layers.Dense(3)])

    student = tfc.pruning.prune_low_magnitude(
        mlp(8), pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    distiller = tfc.distillation.Distiller(mlp(32), student, tfc.distillation.LogitsDistillation())
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(np.ones((16, 4)), np.zeros(16), verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(),
        tfc.CompressionSummaries(log_dir=tempfile.mkdtemp())])  # pruning + loss components
    ```
    """

    sections = {"pruning": pruning_section, "quantization": quantization_section,
                "distillation": distillation_section}
