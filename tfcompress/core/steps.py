"""Which training step is it? One answer for every step-driven wrapper.

Masks (and later quantizer ranges) update *inside* the compiled train step,
at the step the schedule names. The step is read from the optimizer's own
`iterations` counter, which a callback binds to each wrapper before `fit`
traces the train function. This is exact however Keras runs `fit`:
`steps_per_execution > 1` (batch hooks fire once per execution),
`jit_compile=True`, a model called twice per step (a Distiller), and under
`tf.distribute` (every replica reads the same synced counter).

Custom training loops that drive callbacks by hand without giving the model an
optimizer fall back to a counter the callback advances in
`on_train_batch_begin`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import nonfinite

#: Bound on wrappers as `_step_source`: the callback advances `pruning_step`.
CALLBACK_COUNTER = "callback-counter"

MISSING_CALLBACK = (
    "{name} was called with training=True, but no training step is bound to "
    "it. Add the step callback to fit, e.g. "
    "`model.fit(..., callbacks=[tfcompress.pruning.UpdatePruningStep()])` (the same "
    "as tfcompress.core.steps.StepCallback(), which drives every technique); in a "
    "custom training loop call `callback.set_model(model)` and "
    "`callback.on_train_begin()` before the first step and "
    "`callback.on_train_batch_begin(batch)` before each step."
)


def bind(wrappers, source):
    """Binds `source` (an optimizer's `iterations`, or CALLBACK_COUNTER)."""
    for wrapper in wrappers:
        # Not a tracked attribute: the wrapper must not own the optimizer's
        # variable (it would be saved twice, and built layers are locked).
        object.__setattr__(wrapper, "_step_source", source)


def current_step(wrapper):
    """The 1-based step of the train step being traced, as an int64 tensor:
    `optimizer.iterations + 1 + offset`, the offset carrying a schedule over
    to a fresh optimizer.

    Also writes it into `wrapper.step_variable()` so it is saved with the
    model and visible to summaries.
    """
    source = getattr(wrapper, "_step_source", None)
    if source is None:
        raise RuntimeError(MISSING_CALLBACK.format(name=wrapper.name))
    step_var = wrapper.step_variable()
    if isinstance(source, str):
        return tf.convert_to_tensor(step_var.value)
    offset = wrapper.step_offset_variable().value
    step = tf.cast(tf.convert_to_tensor(source), "int64") + 1 + offset
    step_var.assign(step)
    return step


def steps_per_epoch(x, batch_size):
    """Training steps in one epoch over `x` (an array, or a dict/list of arrays).

    Example:

    ```python
    import numpy as np
    from tfcompress.core import steps
    assert steps.steps_per_epoch({"user": np.zeros(100), "item": np.zeros(100)}, 32) == 4
    ```
    """
    return math.ceil(len(keras.tree.flatten(x)[0]) / batch_size)


def stored_step(wrappers):
    """The latest step the step-driven `wrappers` have saved (0 before any)."""
    return max((int(np.asarray(w.step_variable())) for w in wrappers
                if w.built and w.step_variable() is not None), default=0)


def step_driven(model):
    """The step-driven wrappers inside `model` (`WeightWrapper.step_driven`), however deep."""
    from tfcompress.core.graph import find
    from tfcompress.core.wrapper import WeightWrapper

    return [w for w in find(model, WeightWrapper) if w.step_driven]


class StepCallback(keras.callbacks.Callback):
    """Binds the training step to every step-driven wrapper in the model.

    One callback drives every technique's schedule (`UpdatePruningStep` is
    this callback under TFMOT's name). With a model optimizer, its
    `iterations` counter is bound (exact under any `fit` configuration);
    without one (a custom loop driving callbacks by hand), the callback counts
    batches itself.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc
    model = tfc.pruning.prune_low_magnitude(
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
              callbacks=[tfc.core.steps.StepCallback()])
    ```
    """

    # Its batch-end check only reads variables and raises, so Keras may run it off
    # the training thread: a callback without this makes `fit` wait for every
    # step's logs before dispatching the next step (~1 ms a step here).
    async_safe = True

    def __init__(self):
        super().__init__()
        self.wrappers = []
        self._counter = None
        self._checked = False

    def on_train_begin(self, logs=None):
        self._checked = False
        self.wrappers = step_driven(self.model)
        for cls in {type(w) for w in self.wrappers}:
            cls.link([w for w in self.wrappers if type(w) is cls])
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            # A fresh optimizer (recompiled, or a new model around the same
            # wrappers) starts at 0: continue each schedule where it stopped.
            iterations = int(np.asarray(optimizer.iterations))
            for wrapper in self.wrappers:
                if wrapper.built:
                    done = int(np.asarray(wrapper.step_variable()))
                    wrapper.step_offset_variable().assign(max(0, done - iterations))
            bind(self.wrappers, optimizer.iterations)
            self._counter = None
        else:
            bind(self.wrappers, CALLBACK_COUNTER)
            self._counter = stored_step(self.wrappers)

    def on_train_batch_end(self, batch=None, logs=None):
        if not self._checked:
            self._checked = True
            self._check_steps_advanced()

    def on_epoch_end(self, epoch=None, logs=None, **kwargs):
        # Also accepts TFMOT's `on_epoch_end(batch=...)` spelling.
        self._check_steps_advanced()

    def on_train_end(self, logs=None):
        nonfinite.warn_skipped(self.model)

    def _check_steps_advanced(self):
        """Fails loudly if training ran but a wrapper never saw training=True."""
        if self._counter is not None or not self.wrappers:
            return
        iterations = int(np.asarray(self.model.optimizer.iterations))
        stale = [w.name for w in self.wrappers if w.built and int(np.asarray(
            w.step_variable())) < iterations + int(np.asarray(w.step_offset_variable()))]
        if iterations and stale:
            raise RuntimeError(
                f"Training ran {iterations} steps but {stale} never ran in training "
                "mode, so its schedule did not advance. Keras only passes "
                "`training=True` down to layers when every enclosing call() "
                "accepts it: give your model's call() a `training=None` argument "
                "and pass it to sublayers, e.g. "
                "`def call(self, x, training=None): return self.dense(x, training=training)`."
            )

    def on_train_batch_begin(self, batch=None, logs=None):
        if self._counter is None:
            return
        self._counter += 1
        for wrapper in self.wrappers:
            if wrapper.built:
                wrapper.step_variable().assign(self._counter)
