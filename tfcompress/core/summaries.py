"""TensorBoard callbacks that also log what each compression technique exposes.

A technique contributes a *section*: a function `section(model, histograms)`
that returns a `Section` (scalars, histograms, custom-scalars charts) or `None`
when the model holds nothing of that technique. `Summaries` writes each
section into its own run, `<log_dir>/<name>`, with tags `<name>/<tag>` on the
optimizer's step axis, and writes the section's charts once as a TensorBoard
custom scalars layout (several tags drawn as lines of one chart).
"""

import collections
import numbers
import os

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar

from tfcompress.core import nonfinite, steps, techniques
from tfcompress.core.graph import find
from tfcompress.core.wrapper import WeightWrapper

Section = collections.namedtuple("Section", ["scalars", "histograms", "charts"])
Section.__doc__ = """What one technique logs at one step.

`scalars`: `{tag: float}`; `histograms`: `{tag: array}` (asked for only at
epoch ends); `charts`: `{title: [tag regex, ...]}`, each drawn as one
multi-line chart in TensorBoard's custom scalars dashboard.

Example (see `Summaries` for a whole section function):

```python
from tfcompress.core.summaries import Section
Section({"loss_scale": 1.0}, {}, {"scales": ["mine/loss_scale$"]})
```
"""


class Summaries(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` plus the sections named in `sections`.

    Subclasses set `sections = {run_name: section_fn}`. Scalars are written at
    each epoch's begin and end and, when `update_freq` is an int, every
    `update_freq` training steps; histograms (when `histograms=True`) at each
    epoch's end.

    Example: a section of your own, the norm of every kernel.

    ```python
    import keras, numpy as np, tempfile
    from tfcompress.core.summaries import Section, Summaries

    def kernel_norms(model, histograms):
        norms = {f"{l.name}/norm": float(np.linalg.norm(l.kernel))
                 for l in model.layers if hasattr(l, "kernel")}
        return Section(norms, {}, {"kernel norms": ["norms/.*/norm$"]})

    class NormSummaries(Summaries):
        sections = {"norms": kernel_norms}

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.fit(np.ones((16, 4)), np.ones((16, 2)), verbose=0,
              callbacks=[NormSummaries(log_dir=tempfile.mkdtemp())])
    ```
    """

    sections = {}

    def __init__(self, log_dir, update_freq="epoch", histograms=True, **kwargs):
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"log_dir must be a non-empty path, got {log_dir!r}.")
        if isinstance(update_freq, numbers.Integral) and not isinstance(update_freq, bool):
            update_freq = int(update_freq)  # numpy ints too (TFMOT code computes them)
        super().__init__(log_dir=str(log_dir), update_freq=update_freq, **kwargs)
        self.histograms = bool(histograms)
        self._section_writers = {}
        self._last_logged = None

    def _step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            return int(np.asarray(optimizer.iterations))
        # A custom loop without `model.optimizer`: the step-driven wrappers'
        # own counters (see `steps.StepCallback`).
        return steps.stored_step(find(self.model, WeightWrapper))

    def _writer(self, name, charts):
        if name not in self._section_writers:
            writer = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
            if charts:
                layout = layout_pb2.Layout(category=[layout_pb2.Category(
                    title=name, chart=[
                        layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(
                            tag=list(tags)))
                        for title, tags in charts.items()])])
                with writer.as_default():
                    tf.summary.experimental.write_raw_pb(
                        custom_scalar.pb(layout).SerializeToString(), step=0)
            self._section_writers[name] = writer
        return self._section_writers[name]

    def _write(self, histograms=False):
        step = self._step()
        new_step = step != self._last_logged
        histograms = histograms and self.histograms
        if not (new_step or histograms):
            return
        self._last_logged = step
        for name, section_fn in self.sections.items():
            section = section_fn(self.model, histograms)
            if section is None:
                continue
            writer = self._writer(name, section.charts)
            with writer.as_default():
                for tag, value in section.scalars.items() if new_step else ():
                    tf.summary.scalar(f"{name}/{tag}", value, step=step)
                for tag, values in section.histograms.items():
                    tf.summary.histogram(f"{name}/{tag}", values, step=step)
            writer.flush()

    def on_epoch_begin(self, epoch=None, logs=None):
        # Custom loops that drive callbacks by hand may call this with no
        # logs before Keras' TensorBoard has set itself up; skip its part then.
        if logs is not None or getattr(self, "_train_step", None) is not None:
            super().on_epoch_begin(epoch, logs)
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if isinstance(self.update_freq, int) and self.update_freq > 0:
            step, last = self._step(), self._last_logged or 0
            if step // self.update_freq > last // self.update_freq:
                self._write()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._write(histograms=True)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        nonfinite.warn_skipped(self.model)
        self._write()
        for writer in self._section_writers.values():
            writer.close()
        self._section_writers = {}


class CompressionSummaries(Summaries):
    """`keras.callbacks.TensorBoard` plus the view of every registered technique.

    Writes what `keras.callbacks.TensorBoard` writes, and each registered
    technique's section (`tfcompress.core.techniques`) for whatever the model
    holds:
    - pruning (`<log_dir>/pruning`): sparsity per mask as one multi-line
      chart, global sparsity, the pruning step, and histograms of the kept
      weights at each epoch's end;
    - QAT (`<log_dir>/quantization`): every activation range's min and max,
      one chart per layer;
    - clustering (`<log_dir>/clustering`): distinct values and centroid drift
      per clustered weight, and histograms of the centroids;
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

    @property
    def sections(self):
        return techniques.sections()
