"""What every distillation loss shares: the interface and input checks.

A distillation loss compares what the teacher produced with what the student
produced for the same batch and returns one scalar. It is a plain object (no
variables of its own, except `FeatureDistillation`'s optional projection,
which the `Distiller` creates and trains), so the same instance can be handed
to `tfcompress.distillation.Distiller` or to `keras.distillation.Distiller`.
"""

import keras

#: Activations whose output is a probability, not a logit.
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid", "log_softmax")


class DistillationLoss(keras.distillation.DistillationLoss):
    """Base class of the tfcompress distillation losses.

    Subclasses implement `compute_loss(teacher_outputs, student_outputs)`,
    returning a scalar. `teacher_layer_name` / `student_layer_name` (None by
    default) say which intermediate layers to compare instead of the model
    outputs. `name` is the suffix of the loss's own metric,
    `distillation_loss_<name>`.

    It subclasses `keras.distillation.DistillationLoss`, so a custom loss
    written against either base works with either `Distiller`.

    Example:

    ```python
    import keras
    from tfcompress.distillation import DistillationLoss

    class MeanAbsoluteGap(DistillationLoss):
        def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs))

    loss = MeanAbsoluteGap(name="gap")
    loss.compute_loss(keras.ops.ones((2, 3)), keras.ops.zeros((2, 3)))  # 1.0
    ```
    """

    teacher_layer_name = None
    student_layer_name = None
    default_name = None

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string or None, got {name!r}.")
        self.name = name or self.default_name or snake_name(type(self).__name__)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss(teacher_outputs, "
            "student_outputs) and return a scalar."
        )

    def validate_outputs(self, teacher_outputs, student_outputs):
        teacher = single_tensor(teacher_outputs, "teacher", self)
        student = single_tensor(student_outputs, "student", self)
        check_same_shape(teacher.shape, student.shape, self)

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class OutputDistillation(DistillationLoss):
    """Shared parts of losses on the models' outputs: a temperature and
    `from_logits`, checked against the models' final activations.

    Example:

    ```python
    from tfcompress.distillation import LogitsDistillation
    loss = LogitsDistillation(temperature=2.0)  # an OutputDistillation
    loss.get_config()
    ```
    """

    def __init__(self, temperature, from_logits, name=None):
        super().__init__(name=name)
        self.temperature = check_temperature(temperature, type(self).__name__)
        if not isinstance(from_logits, bool):
            raise ValueError(f"from_logits must be True or False, got {from_logits!r}.")
        self.from_logits = from_logits

    def validate_model_compatibility(self, teacher, student):
        check_from_logits(teacher, "teacher", self.from_logits, self)
        check_from_logits(student, "student", self.from_logits, self)

    def get_config(self):
        return {"temperature": self.temperature, "from_logits": self.from_logits,
                "name": self.name}


def snake_name(class_name):
    """`LogitsDistillation` -> `logits`, `MyThing` -> `my_thing`."""
    out = []
    for i, ch in enumerate(class_name):
        if ch.isupper() and i and not class_name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    name = "".join(out)
    for suffix in ("_distillation", "_loss"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def check_temperature(temperature, owner):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(
            f"{owner}: temperature must be a positive number, got {temperature!r}."
        )
    if not temperature > 0:
        raise ValueError(
            f"{owner}: temperature must be > 0, got {temperature}. It divides the "
            "logits; T=1 is the plain distribution, T of 2-5 softens it "
            "(Hinton et al. use T around 2-4)."
        )
    return float(temperature)


def single_tensor(outputs, who, loss):
    """The one tensor a loss compares; a clear error for multi-output models."""
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"{type(loss).__name__} compares one tensor, but the {who} returned "
            f"a {type(outputs).__name__} of {len(outputs)} outputs. Give each "
            "output its own model head, or distil an intermediate layer with "
            "FeatureDistillation(teacher_layer_name=..., student_layer_name=...)."
        )
    return outputs


def check_same_shape(teacher_shape, student_shape, loss, what="output"):
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    ok = len(teacher_shape) == len(student_shape) and all(
        a is None or b is None or a == b for a, b in zip(teacher_shape, student_shape)
    )
    if not ok:
        raise ValueError(
            f"{type(loss).__name__}: teacher {what} shape {teacher_shape} does not "
            f"match student {what} shape {student_shape}. Both models must "
            "produce the same shape (e.g. the same number of classes); for "
            "intermediate features of different widths use "
            "FeatureDistillation(..., projection='auto')."
        )


def output_activation(model):
    """'softmax'/'sigmoid'/'log_softmax'/'linear' for a graph model's single
    output when it can be read from the last layer, else None (unknown)."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    history = getattr(outputs[0], "_keras_history", None)
    if history is None:
        return None
    layer = history[0]
    activation = getattr(layer, "activation", None)
    while activation is None and isinstance(getattr(layer, "layer", None), keras.layers.Layer):
        layer = layer.layer  # a wrapper (pruning, QAT, or both)
        activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or str(activation)
    return name if name in _PROBABILITY_ACTIVATIONS + ("linear",) else None


def check_from_logits(model, who, from_logits, loss):
    """Refuses a softmax/sigmoid output fed as logits, and a linear one fed as
    probabilities: both train silently towards the wrong target."""
    activation = output_activation(model)
    if activation is None:
        return
    if from_logits and activation in _PROBABILITY_ACTIVATIONS:
        raise ValueError(
            f"{type(loss).__name__}(from_logits=True): the {who} model "
            f"'{model.name}' ends in a {activation} activation, so its outputs "
            "are probabilities, not logits. Pass from_logits=False (the loss "
            "then works on log-probabilities), or remove the final activation."
        )
    if not from_logits and activation == "linear":
        raise ValueError(
            f"{type(loss).__name__}(from_logits=False): the {who} model "
            f"'{model.name}' ends in a linear layer, so its outputs are logits, "
            "not probabilities. Pass from_logits=True."
        )
