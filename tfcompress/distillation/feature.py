"""Feature (hint) distillation between intermediate layers."""

import keras

from tfcompress.distillation import base


@keras.saving.register_keras_serializable("tfcompress")
class FeatureDistillation(base.DistillationLoss):
    """Matches an intermediate student layer to a teacher layer (FitNets hints).

    The `Distiller` reads the outputs of the named layers in the same forward
    pass as the model outputs (the student still runs once per step) and
    applies `loss` to them, averaged over all elements. When the two layers
    have different widths (last axis), a learned linear projection
    (a bias-free `Dense` on the last axis, i.e. a 1x1 convolution for image
    features) maps the student's features to the teacher's width. The
    projection is trained with the student by the `Distiller` and is not part
    of the student model: `distiller.student` stays unchanged in shape.

    Args:
        loss: a Keras loss name or instance applied as `loss(teacher, student)`
            (default `"mse"`; `"cosine_similarity"` also works).
        teacher_layer_name: layer of the teacher whose output is the target;
            None compares the model outputs.
        student_layer_name: layer of the student to train towards it. A layer
            wrapped by pruning or QAT is found by its original name.
        projection: `"auto"` (default) learns a projection only when the
            widths differ; True always learns one; False never (different
            widths are then an error).
        name: metric suffix (default `feature_<student_layer_name>`).

    Example:

    ```python
    import keras
    from tfcompress.distillation import Distiller, FeatureDistillation

    teacher = keras.Sequential([keras.Input((8,)),
                                keras.layers.Dense(64, activation="relu", name="hidden"),
                                keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((8,)),
                                keras.layers.Dense(16, activation="relu", name="hidden"),
                                keras.layers.Dense(3)])
    hint = FeatureDistillation("mse", teacher_layer_name="hidden",
                               student_layer_name="hidden")  # 16 -> 64 projected
    distiller = Distiller(teacher, student, [hint])
    ```
    """

    def __init__(self, loss="mse", teacher_layer_name=None, student_layer_name=None,
                 projection="auto", name=None):
        for arg, value in (("teacher_layer_name", teacher_layer_name),
                           ("student_layer_name", student_layer_name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{arg} must be a layer name or None, got {value!r}.")
        if not (isinstance(projection, bool) or projection == "auto"):
            raise ValueError(
                f"projection must be 'auto', True or False, got {projection!r}.")
        default = f"feature_{student_layer_name}" if student_layer_name else "feature"
        super().__init__(name=name or default)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.projection = projection
        self.loss = loss
        self._loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        if not callable(self._loss_fn):
            raise ValueError(
                f"FeatureDistillation: loss must be a Keras loss name or a callable "
                f"loss(teacher, student), got {loss!r}.")
        self.projection_layer = None

    def build(self, teacher_shape, student_shape):
        """Creates the projection if needed; returns it (or None).

        Called by the `Distiller` with the symbolic feature shapes.
        """
        teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
        base.check_same_shape(teacher_shape[:-1], student_shape[:-1], self,
                              what=f"feature (all axes but the last, layers "
                                   f"'{self.teacher_layer_name}'/'{self.student_layer_name}')")
        t_width, s_width = teacher_shape[-1], student_shape[-1]
        differ = t_width != s_width
        if differ and self.projection is False:
            raise ValueError(
                f"FeatureDistillation '{self.name}': teacher features have width "
                f"{t_width} and student features {s_width}, and projection=False. "
                "Pass projection='auto' to learn a linear map between them.")
        if self.projection is True or differ:
            if t_width is None or s_width is None:
                raise ValueError(
                    f"FeatureDistillation '{self.name}': a projection needs known "
                    f"feature widths, got teacher {teacher_shape}, student {student_shape}.")
            self.projection_layer = keras.layers.Dense(
                t_width, use_bias=False, name=f"{self.name}_projection")
            self.projection_layer.build(student_shape)
        else:
            self.projection_layer = None
        return self.projection_layer

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        ops = keras.ops
        teacher = ops.stop_gradient(ops.cast(
            base.single_tensor(teacher_outputs, "teacher", self), "float32"))
        student = ops.cast(base.single_tensor(student_outputs, "student", self), "float32")
        if self.projection_layer is not None:
            student = self.projection_layer(student)
        if teacher.shape[-1] != student.shape[-1]:
            raise ValueError(
                f"FeatureDistillation '{self.name}': widths {teacher.shape[-1]} "
                f"(teacher) and {student.shape[-1]} (student) differ and no "
                "projection is built. The projection is created by "
                "tfcompress.distillation.Distiller; keras.distillation.Distiller "
                "cannot train one.")
        return ops.mean(self._loss_fn(teacher, student))

    def validate_outputs(self, teacher_outputs, student_outputs):
        base.single_tensor(teacher_outputs, "teacher", self)
        base.single_tensor(student_outputs, "student", self)

    def validate_model_compatibility(self, teacher, student):
        for model, who, layer_name in ((teacher, "teacher", self.teacher_layer_name),
                                       (student, "student", self.student_layer_name)):
            if layer_name is not None:
                find_layer(model, layer_name, who)

    def get_config(self):
        loss = self.loss if isinstance(self.loss, str) else keras.losses.serialize(self.loss)
        return {"loss": loss, "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name,
                "projection": self.projection, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if not isinstance(config.get("loss"), str):
            config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def find_layer(model, name, who):
    """The layer called `name` in a Sequential/functional `model`.

    A pruning or QAT wrapper counts under its inner layer's name as well.
    """
    if getattr(model, "inputs", None) is None or getattr(model, "outputs", None) is None:
        raise ValueError(
            f"Feature distillation reads layer '{name}' of the {who} "
            f"'{model.name}', which needs a Sequential or functional model (with "
            f"an Input); {type(model).__name__} '{model.name}' has no symbolic "
            "inputs. Build it with keras.Input, or distil its outputs only.")
    layers = list(model.layers)
    for layer in layers:
        if layer.name == name:
            return layer
    for layer in layers:  # wrappers (pruning, QAT, both nested) by their inner layer's name
        inner = getattr(layer, "layer", None)
        while isinstance(inner, keras.layers.Layer):
            if inner.name == name:
                return layer
            inner = getattr(inner, "layer", None)
    names = [layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
    raise ValueError(
        f"The {who} model '{model.name}' has no layer named '{name}'. Its layers "
        f"are: {names}. Pass one of these as {who}_layer_name.")
