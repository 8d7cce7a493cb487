"""The Distiller: a frozen teacher trains a student inside compile/fit."""

import warnings

import keras

from tfcompress.core import find
from tfcompress.core.wrapper import WeightWrapper
from tfcompress.distillation import base
from tfcompress.distillation.feature import find_layer

_OUTPUT = "__output__"


@keras.saving.register_keras_serializable("tfcompress")
class Distiller(keras.Model):
    """Trains `student` from labels and from one or more frozen teachers.

    The same signature as `keras.distillation.Distiller`. Compile and fit it
    like any model, with the student's usual loss, metrics and callbacks
    (pruning and QAT callbacks included); afterwards `distiller.student` is
    the trained, plain Keras model, ready for `tfcompress.strip` and export.

    Each step:

    - the student runs **once**, with `training=True` (its outputs and the
      intermediate layers named by feature losses come from the same pass);
    - each teacher runs with `training=False` (BatchNormalization and Dropout
      in inference mode) and is frozen (`trainable=False`): its weights never
      change;
    - the loss is `student_loss_weight * label_loss
      + (1 - student_loss_weight) * sum_i w_i * sum_k a_k * loss_i(teacher_k, student)
      + student regularization losses`, where `w_i` are
      `distillation_loss_weights` and `a_k` the (normalized) `teacher_weights`.
      Without labels (`fit(x)`) only the distillation part is used.

    Every component is a metric, so it shows in the History, the progress
    bar and TensorBoard: `student_loss`, `distillation_loss` (the weighted
    sum), `distillation_loss_<name>` per loss (and
    `distillation_loss_<name>_<teacher name>` per teacher when there are several;
    `_teacher<k>` when their names clash),
    and `total_loss`.

    Args:
        teacher: a built `keras.Model`, or a list of them for several teachers.
        student: the `keras.Model` to train (it may carry pruning/QAT wrappers).
        distillation_losses: one loss or a list: `LogitsDistillation`,
            `BinaryDistillation`, `FeatureDistillation`,
            `ListwiseDistillation`, `PairwiseDistillation`, or the
            `keras.distillation` ones.
        distillation_loss_weights: one weight per loss (default 1 each).
        student_loss_weight: weight of the label loss, in [0, 1] (default 0.5).
        teacher_weights: one weight per teacher (default equal); normalized
            to sum to 1.
        name: model name.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress import examples

    (x, y), _, _ = examples.digits()
    teacher = examples.digits_cnn(width=32)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=2, verbose=0)

    distiller = tfc.distillation.Distiller(
        teacher=teacher, student=examples.digits_cnn(width=4),
        distillation_losses=tfc.distillation.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.3)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=2, verbose=0)
    student = distiller.student  # a plain keras.Model
    ```
    """

    def __init__(self, teacher, student, distillation_losses, distillation_loss_weights=None,
                 student_loss_weight=0.5, teacher_weights=None, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("teacher: pass a keras.Model or a non-empty list of them.")
        for model in teachers:
            _check_teacher(model)
        _check_model(student, "student")
        if any(model is student for model in teachers):
            raise ValueError("The student cannot be its own teacher: pass two different models.")
        losses, loss_weights = _as_lists(distillation_losses, distillation_loss_weights)
        self.student_loss_weight = _check_weight(student_loss_weight)
        self.teacher_weights = _normalized(teacher_weights, teachers)

        self.teacher = teacher
        self.teachers = teachers
        self.student = student
        self.distillation_losses = losses
        self.distillation_loss_weights = loss_weights
        for model in teachers:
            model.trainable = False

        for loss in losses:
            _warn_keras_logits_pitfall(loss)
            for model in teachers:
                loss.validate_model_compatibility(model, student)
        if any(_layer_name(loss, "student") is None and _layer_name(loss, "teacher") is None
               for loss in losses):
            for model in teachers:
                _check_compatible(model, student)

        student_names = _unique(_layer_name(loss, "student") for loss in losses)
        teacher_names = _unique(_layer_name(loss, "teacher") for loss in losses)
        # Untracked: the extractors only reuse the models' own layers.
        object.__setattr__(self, "_student_extractor",
                           _extractor(student, student_names, "student"))
        object.__setattr__(self, "_teacher_extractors",
                           [_extractor(model, teacher_names, "teacher") for model in teachers])
        object.__setattr__(self, "_pending", None)

        self._terms, projections = self._make_terms(losses, loss_weights, student_names,
                                                    teacher_names)
        self._projections = projections
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.component_trackers = [keras.metrics.Mean(name=f"distillation_loss_{term['name']}")
                                   for term in self._terms]
        names = [model.name for model in teachers]
        if len(set(names)) < len(names):  # e.g. two models both called "sequential"
            names = [f"teacher{k}" for k in range(len(teachers))]
        self.teacher_trackers = [
            keras.metrics.Mean(name=f"distillation_loss_{term['name']}_{name}")
            for term in self._terms for name in names] if len(teachers) > 1 else []
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        # Built as soon as its parts are: callbacks that restore weights before
        # the first step (keras.callbacks.BackupAndRestore) refuse unbuilt models.
        self.built = bool(student.built)

    # -- construction helpers ---------------------------------------------------
    def _make_terms(self, losses, loss_weights, student_names, teacher_names):
        """One term per loss; a loss with trained state (a projection) gets its
        own copy for every teacher after the first."""
        terms, projections, seen = [], [], {}
        for loss, weight in zip(losses, loss_weights):
            name = _metric_name(loss)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}_{seen[name]}"
            per_teacher = []
            for k, model in enumerate(self.teachers):
                instance = loss
                if hasattr(loss, "build"):
                    if k:
                        instance = type(loss).from_config(loss.get_config())
                    t_shape = _feature_shape(model, _layer_name(loss, "teacher"), "teacher")
                    s_shape = _feature_shape(self.student, _layer_name(loss, "student"),
                                             "student")
                    layer = instance.build(t_shape, s_shape)
                    if layer is not None:
                        projections.append(layer)
                per_teacher.append(instance)
            terms.append({"name": name, "weight": weight, "losses": per_teacher,
                          "teacher_key": _layer_name(loss, "teacher") or _OUTPUT,
                          "student_key": _layer_name(loss, "student") or _OUTPUT})
        return terms, projections

    # -- training ----------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                **kwargs):
        """Like `keras.Model.compile`; `loss` is the student's label loss.

        `loss` may be None only when `student_loss_weight == 0` (pure
        distillation). Metrics are computed on the student's outputs.
        """
        if loss is None and self.student_loss_weight > 0:
            raise ValueError(
                "Distiller.compile: pass the student's label loss, e.g. "
                "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), "
                "or build the Distiller with student_loss_weight=0 to train on "
                "the teacher alone.")
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights,
                        metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        """The student's outputs (the student runs once, features included)."""
        if self._student_extractor is None:
            return self.student(inputs, training=training)
        found = self._student_extractor(inputs, training=training)
        outputs = found.pop(_OUTPUT)
        object.__setattr__(self, "_pending", (_first(outputs), found))
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ops = keras.ops
        if y_pred is None:
            y_pred = self(x, training=training)
        student_features = {_OUTPUT: y_pred}
        if self._student_extractor is not None:
            pending = self._pending
            object.__setattr__(self, "_pending", None)
            if pending is not None and pending[0] is _first(y_pred):
                student_features.update(pending[1])
            else:  # y_pred did not come from this model's call: run the extractor
                found = self._student_extractor(x, training=training)
                found.pop(_OUTPUT)
                student_features.update(found)

        student_loss = ops.convert_to_tensor(0.0)
        if self.student_loss_weight > 0 and y is not None:
            student_loss = self._compile_loss(y, y_pred, sample_weight)
        distillation_loss = ops.convert_to_tensor(0.0)
        pending_metrics = []
        if self.student_loss_weight < 1 or y is None:
            teacher_features = [extract(x) for extract in self._teacher_extractors]
            for i, term in enumerate(self._terms):
                value = ops.convert_to_tensor(0.0)
                for k, loss in enumerate(term["losses"]):
                    teacher_out = teacher_features[k][term["teacher_key"]]
                    student_out = student_features[term["student_key"]]
                    loss.validate_outputs(teacher_out, student_out)
                    part = loss.compute_loss(teacher_out, student_out)
                    if len(getattr(part, "shape", ())) != 0:
                        raise ValueError(
                            f"{type(loss).__name__}.compute_loss returned shape "
                            f"{tuple(part.shape)}; a distillation loss must return a scalar.")
                    part = ops.cast(part, "float32")
                    if self.teacher_trackers:
                        pending_metrics.append(
                            (self.teacher_trackers[i * len(self.teachers) + k], part))
                    value = value + self.teacher_weights[k] * part
                pending_metrics.append((self.component_trackers[i], value))
                distillation_loss = distillation_loss + term["weight"] * value
        # Without labels (`fit(x)`) the distillation loss is the whole loss.
        label_weight = self.student_loss_weight if y is not None else 0.0
        total = (label_weight * ops.cast(student_loss, "float32")
                 + (1.0 - label_weight) * distillation_loss)
        regularization = [ops.sum(ops.cast(l, "float32")) for l in self.student.losses]
        if regularization:
            total = total + ops.sum(ops.stack(regularization))
        batch = _batch_size(x)
        for tracker, value in pending_metrics:
            tracker.update_state(value, sample_weight=batch)
        self.student_loss_tracker.update_state(student_loss, sample_weight=batch)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=batch)
        self.total_loss_tracker.update_state(total, sample_weight=batch)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics score the student against labels; `fit(x)` has none.

        Without labels (pure distillation) only the loss components are
        reported; labelled validation data still gets every metric.
        """
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight)
        return self.get_metrics_result()

    def get_metrics_result(self):
        compiled = self._compile_metrics
        if compiled is None or compiled.built:
            return super().get_metrics_result()
        results = {}  # label metrics not built yet: no labelled batch so far
        for metric in self.metrics:
            if metric is not compiled:
                result = metric.result()
                results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    # -- serialization -------------------------------------------------------------
    def get_config(self):
        """Teacher(s), student and losses by value: `.keras` files round-trip."""
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        teacher = ([serialize(t) for t in self.teachers]
                   if isinstance(self.teacher, (list, tuple)) else serialize(self.teacher))
        config.update({
            "teacher": teacher,
            "student": serialize(self.student),
            "distillation_losses": [serialize(loss) for loss in self.distillation_losses],
            "distillation_loss_weights": list(self.distillation_loss_weights),
            "student_loss_weight": self.student_loss_weight,
            "teacher_weights": list(self.teacher_weights),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        teacher = config.pop("teacher")
        config["teacher"] = ([deserialize(t) for t in teacher] if isinstance(teacher, list)
                             else deserialize(teacher))
        config["student"] = deserialize(config.pop("student"))
        config["distillation_losses"] = [deserialize(loss)
                                         for loss in config.pop("distillation_losses")]
        return cls(**config)

    def compile_from_config(self, config):
        """Re-compiles a loaded Distiller with its saved compile arguments."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)


# -- checks ---------------------------------------------------------------------------
def _check_model(model, who):
    if not isinstance(model, keras.Model):
        raise ValueError(f"The {who} must be a keras.Model, got {type(model).__name__}.")


def _check_teacher(model):
    _check_model(model, "teacher")
    if not model.built:
        raise ValueError(
            f"The teacher '{model.name}' is not built, so it has no weights and "
            "nothing to teach. Train it first (or at least build it: give it a "
            "keras.Input, or call it on a batch) and then pass it to Distiller.")
    wrapped = find(model, WeightWrapper)
    if wrapped:
        raise ValueError(
            f"The teacher '{model.name}' still carries tfcompress wrappers "
            f"({[w.name for w in wrapped][:3]}...). A teacher runs in inference "
            "mode and never advances their schedules; strip it first, e.g. "
            "`teacher = tfcompress.strip(teacher)`.")


def _check_weight(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"student_loss_weight must be a number in [0, 1], got {value!r}: the "
            "loss is w * label_loss + (1 - w) * distillation_loss.")
    return float(value)


def _as_lists(losses, weights):
    if losses is None:
        raise ValueError(
            "distillation_losses is required: e.g. "
            "tfcompress.distillation.LogitsDistillation(temperature=4.0).")
    losses = list(losses) if isinstance(losses, (list, tuple)) else [losses]
    if not losses:
        raise ValueError("distillation_losses is empty: pass at least one loss.")
    for loss in losses:
        if not callable(getattr(loss, "compute_loss", None)):
            raise ValueError(
                f"{loss!r} is not a distillation loss: it needs a "
                "compute_loss(teacher_outputs, student_outputs) method (subclass "
                "tfcompress.distillation.DistillationLoss).")
    if weights is None:
        weights = [1.0] * len(losses)
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(weights) != len(losses):
        raise ValueError(
            f"distillation_loss_weights has {len(weights)} entries but there are "
            f"{len(losses)} distillation losses: give one weight per loss.")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"distillation_loss_weights must be numbers >= 0, got {weights}.")
    return losses, [float(w) for w in weights]


def _normalized(weights, teachers):
    if weights is None:
        return [1.0 / len(teachers)] * len(teachers)
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(weights) != len(teachers) or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights
    ) or sum(weights) <= 0:
        raise ValueError(
            f"teacher_weights must be one number >= 0 per teacher ({len(teachers)}), "
            f"not all zero; got {weights}.")
    return [float(w) / sum(weights) for w in weights]


def _check_compatible(teacher, student):
    """Same output structure and shapes (batch axis aside), and same inputs."""
    for what in ("inputs", "outputs"):
        t, s = getattr(teacher, what, None), getattr(student, what, None)
        if t is None or s is None:
            continue
        t_shapes, s_shapes = [tuple(v.shape) for v in t], [tuple(v.shape) for v in s]
        same = len(t_shapes) == len(s_shapes) and all(
            len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
            for a, b in zip(t_shapes, s_shapes))
        if not same:
            hint = ("e.g. the same number of classes" if what == "outputs"
                    else "both models are fed the same batches")
            raise ValueError(
                f"Teacher '{teacher.name}' and student '{student.name}' {what} do not "
                f"match: teacher {t_shapes}, student {s_shapes}. Distilling outputs "
                f"needs the same {what[:-1]} shapes ({hint}).")


def _warn_keras_logits_pitfall(loss):
    """keras.distillation.LogitsDistillation with its default `loss="kl_divergence"`
    resolves the name to the plain function, not a KLDivergence instance, so it
    skips the softmax and the T² factor and computes KL on clipped raw logits."""
    if not isinstance(loss, keras.distillation.LogitsDistillation):
        return
    fns = keras.tree.flatten(loss.loss)
    if any(fn is keras.losses.kl_divergence for fn in fns):
        warnings.warn(
            "keras.distillation.LogitsDistillation(loss='kl_divergence') applies "
            "KL divergence to the temperature-scaled raw logits: the string "
            "resolves to the kl_divergence function, not a KLDivergence instance, "
            "so no softmax is applied (negative logits are clipped to 1e-7) and "
            "there is no T**2 factor. Use "
            "tfcompress.distillation.LogitsDistillation(temperature), or "
            "keras.distillation.LogitsDistillation(loss=keras.losses.KLDivergence()).",
            stacklevel=3)


# -- small helpers ----------------------------------------------------------------------
def _layer_name(loss, who):
    return getattr(loss, f"{who}_layer_name", None)


def _unique(names):
    out = []
    for name in names:
        if name is not None and name not in out:
            out.append(name)
    return out


def _metric_name(loss):
    name = getattr(loss, "name", None)
    if not isinstance(name, str) or not name:
        name = base.snake_name(type(loss).__name__)
    return name


def _output_structure(model):
    try:
        return model.output  # functional: keeps dict/list structure
    except (AttributeError, ValueError):
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else outputs


def _extractor(model, layer_names, who):
    """None (call the model itself) when no layers are named, else a functional
    model returning {_OUTPUT: outputs, name: layer output} in one pass."""
    if not layer_names:
        if who == "teacher":
            return lambda x: {_OUTPUT: model(x, training=False)}
        return None
    outputs = {_OUTPUT: _output_structure(model)}
    for name in layer_names:
        outputs[name] = find_layer(model, name, who).output
    extractor = keras.Model(model.inputs, outputs, name=f"{model.name}_features")
    if who == "teacher":
        return lambda x: extractor(x, training=False)
    return extractor


def _feature_shape(model, layer_name, who):
    if layer_name is None:
        outputs = getattr(model, "outputs", None)
        if not outputs or len(outputs) != 1:
            raise ValueError(
                f"FeatureDistillation on the {who}'s outputs needs a single-output "
                f"Sequential/functional model; '{model.name}' has none or several.")
        return tuple(outputs[0].shape)
    return tuple(find_layer(model, layer_name, who).output.shape)


def _batch_size(x):
    """Rows in the batch, as the Keras loss tracker weighs them."""
    first = next(t for t in keras.tree.flatten(x) if t is not None)
    return keras.ops.cast(keras.ops.shape(first)[0], "float32")


def _first(structure):
    flat = keras.tree.flatten(structure)
    return flat[0] if flat else None
