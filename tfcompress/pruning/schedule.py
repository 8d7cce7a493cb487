"""Pruning schedules: when to update masks, and to what sparsity.

Same parameters and per-step values as TFMOT's schedules. A schedule is
called with the 1-based training step and returns `(should_prune, sparsity)`
as tensors, so it runs inside the compiled train step.
"""

import numbers

import keras
import tensorflow as tf


class PruningSchedule:
    """Base class. Subclasses implement `__call__(step)` and `get_config()`.

    Example (a custom schedule that prunes once, at step 50):

    ```python
    import tensorflow as tf
    from tfcompress.pruning import PruningSchedule

    class OneShot(PruningSchedule):
        def __init__(self, sparsity, step=50):
            self.sparsity, self.step = sparsity, step

        def __call__(self, step):
            return tf.equal(step, self.step), tf.constant(self.sparsity)

        def get_config(self):
            return {"sparsity": self.sparsity, "step": self.step}

    should_prune, sparsity = OneShot(0.5)(tf.constant(50, "int64"))
    ```
    """

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    def end_sparsity(self):
        """The sparsity the schedule ends at (what `allocation="erk"` shares out)."""
        return float(self(tf.constant(2 ** 40, "int64"))[1])

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("class_name", None)
        config = config.pop("config", config)
        return cls(**config)

    def _should_prune(self, step, begin_step, end_step, frequency):
        step = tf.cast(step, "int64")
        in_range = tf.logical_and(
            step >= begin_step, tf.logical_or(end_step < 0, step <= end_step)
        )
        on_turn = tf.equal(tf.math.floormod(step - begin_step, frequency), 0)
        return tf.logical_and(in_range, on_turn)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


def _as_int(name, value):
    """A Python int from an int or a numpy integer (`np.ceil(...).astype(np.int32)`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer (a Python or numpy int), got {value!r}. "
            "For a computed step count, round it first, e.g. "
            "np.ceil(n / batch_size).astype(int) * epochs."
        )
    return int(value)


def _as_float(name, value):
    """A Python float from an int, a float, or a numpy number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    return float(value)


def _check_steps(begin_step, end_step, frequency, allow_forever):
    """Validated `(begin_step, end_step, frequency)` as Python ints."""
    begin_step = _as_int("begin_step", begin_step)
    end_step = _as_int("end_step", end_step)
    frequency = _as_int("frequency", frequency)
    if begin_step < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step}.")
    if end_step == -1 and not allow_forever:
        raise ValueError(
            "end_step=-1 (prune forever) is not allowed for this schedule; give "
            "the step at which final sparsity is reached."
        )
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            f"end_step ({end_step}) must be >= begin_step ({begin_step}), or -1 "
            "to keep pruning until training ends."
        )
    if frequency <= 0:
        raise ValueError(
            f"frequency must be > 0 (steps between mask updates), got {frequency}."
        )
    return begin_step, end_step, frequency


def check_sparsity(name, value):
    """`value` as a Python float in [0, 1)."""
    value = _as_float(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (the fraction of weights set to zero), "
            f"got {value!r}."
        )
    return value


@keras.saving.register_keras_serializable("tfcompress")
class ConstantSparsity(PruningSchedule):
    """The same sparsity at every update step in `[begin_step, end_step]`.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step at which masks update.
        end_step: last step at which masks update; -1 means never stop.
        frequency: masks update every `frequency` steps from `begin_step`.

    Example:

    ```python
    import tfcompress as tfc
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=100)
    should_prune, sparsity = schedule(100)  # (True, 0.5)
    ```
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = check_sparsity("target_sparsity", target_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=True)

    def __call__(self, step):
        should = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        return should, tf.constant(self.target_sparsity, "float32")

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable("tfcompress")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` polynomially.

    At step `s`, with `p = clip((s - begin_step) / (end_step - begin_step), 0, 1)`:
    `sparsity = final + (initial - final) * (1 - p) ** power`
    (Zhu & Gupta, 2017). Masks update every `frequency` steps in
    `[begin_step, end_step]`, so sparsity equals `final_sparsity` from
    `end_step` on when `end_step - begin_step` is a multiple of `frequency`.

    Example:

    ```python
    import tfcompress as tfc
    schedule = tfc.pruning.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=1000)
    should_prune, sparsity = schedule(1000)  # (True, 0.8)
    ```
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step,
                 power=3, frequency=100):
        initial_sparsity = check_sparsity("initial_sparsity", initial_sparsity)
        final_sparsity = check_sparsity("final_sparsity", final_sparsity)
        begin_step, end_step, frequency = _check_steps(
            begin_step, end_step, frequency, allow_forever=False)
        if end_step == begin_step:
            raise ValueError(
                f"end_step ({end_step}) must be > begin_step ({begin_step}) for "
                "PolynomialDecay; use ConstantSparsity for a one-step schedule."
            )
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = _as_float("power", power)
        if self.power.is_integer():
            self.power = int(self.power)  # 3, as TFMOT writes it, not 3.0
        self.frequency = frequency

    def __call__(self, step):
        should = self._should_prune(step, self.begin_step, self.end_step, self.frequency)
        fraction = tf.cast(tf.cast(step, "int64") - self.begin_step, "float32") / float(
            self.end_step - self.begin_step
        )
        p = tf.clip_by_value(fraction, 0.0, 1.0)
        sparsity = self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * tf.pow(1.0 - p, float(self.power))
        return should, sparsity

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def as_schedule(value):
    """`value` as a `PruningSchedule`: None is `ConstantSparsity(0.5, 0)`, a dict a saved one.

    Example:

    ```python
    from tfcompress.pruning import schedule
    assert schedule.as_schedule(None).target_sparsity == 0.5
    ```
    """
    import keras

    value = ConstantSparsity(0.5, 0) if value is None else value
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if not isinstance(value, PruningSchedule):
        raise ValueError(
            "pruning_schedule must be a PruningSchedule such as ConstantSparsity or "
            f"PolynomialDecay, got {type(value).__name__}.")
    return value
