"""Callbacks that drive pruning inside `fit` and log it to TensorBoard."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import steps
from tfcompress.pruning.wrapper import PruneLowMagnitude


class UpdatePruningStep(steps.StepCallback):
    """Drives the pruning schedule; required when training a pruned model.

    Binds the optimizer's step counter to every `PruneLowMagnitude` wrapper
    (nested models and Distiller students included), so masks update inside
    the compiled train step at exactly the schedule's steps. Training a pruned
    model without it raises an error naming this callback.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc

    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
        pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    ```
    """

    wrapper_cls = PruneLowMagnitude


def sparsity_logs(model):
    """Current pruning scalars of `model`: per mask, global, and step.

    Returns a dict `{tag: float}`: `<wrapper>/<mask>` for every mask,
    `global_sparsity` (zeros over all masked weights) and `pruning_step`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    tfc.pruning.sparsity_logs(model)["global_sparsity"]  # 0.0
    ```
    """
    logs, zeros, total, step = {}, 0.0, 0, 0
    for wrapper in steps.find(model, PruneLowMagnitude):
        if not wrapper.built:
            continue
        step = max(step, int(np.asarray(wrapper.pruning_step)))
        for mask in wrapper.masks:
            value = np.asarray(mask)
            logs[f"{wrapper.name}/{mask.name}"] = float(1.0 - value.mean())
            zeros += float(value.size - value.sum())
            total += value.size
    logs["global_sparsity"] = zeros / total if total else 0.0
    logs["pruning_step"] = float(step)
    return logs


class PruningSummaries(keras.callbacks.TensorBoard):
    """TensorBoard callback that also logs per-layer and global sparsity.

    Everything `keras.callbacks.TensorBoard` logs, plus, under
    `<log_dir>/pruning`, the scalars `pruning/<wrapper>/<mask>` (sparsity of
    each mask), `pruning/global_sparsity` and `pruning/step`, at each epoch's
    begin and end and, when `update_freq` is an int, every `update_freq`
    training steps. The x axis is the optimizer's step count.

    Example:

    ```python
    import keras, numpy as np, tempfile
    import tfcompress as tfc

    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0, callbacks=[
        tfc.pruning.UpdatePruningStep(),
        tfc.pruning.PruningSummaries(log_dir=tempfile.mkdtemp())])
    ```
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"log_dir must be a non-empty path, got {log_dir!r}.")
        super().__init__(log_dir=str(log_dir), update_freq=update_freq, **kwargs)
        self._pruning_writer = None
        self._last_logged = None

    def _write(self):
        logs = sparsity_logs(self.model)
        optimizer = getattr(self.model, "optimizer", None)
        step = int(np.asarray(optimizer.iterations)) if optimizer is not None else int(
            logs["pruning_step"])
        if step == self._last_logged:
            return
        self._last_logged = step
        if self._pruning_writer is None:
            self._pruning_writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "pruning"))
        with self._pruning_writer.as_default():
            for tag, value in logs.items():
                name = "step" if tag == "pruning_step" else tag
                tf.summary.scalar(f"pruning/{name}", value, step=step)
        self._pruning_writer.flush()

    def on_epoch_begin(self, epoch=None, logs=None):
        if logs is not None or getattr(self, "_train_step", None) is not None:
            super().on_epoch_begin(epoch, logs)
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if isinstance(self.update_freq, int) and self.update_freq > 0:
            step = int(np.asarray(self.model.optimizer.iterations))
            last = self._last_logged or 0
            if step // self.update_freq > last // self.update_freq:
                self._write()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._write()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._write()
        if self._pruning_writer is not None:
            self._pruning_writer.close()
            self._pruning_writer = None
