"""`PruneLowMagnitude`: a layer whose chosen weights are multiplied by 0/1 masks."""

import keras
import tensorflow as tf

from tfcompress.core import WeightWrapper, rules
from tfcompress.pruning import allocation as allocations
from tfcompress.pruning import masks, registry
from tfcompress.pruning.schedule import as_schedule

CRITERIA = ("magnitude", "fisher")
#: Under `criterion="fisher"`, the decay of the running mean of squared gradients.
FISHER_DECAY = 0.99


@keras.saving.register_keras_serializable("tfcompress")
class PruneLowMagnitude(WeightWrapper):
    """Prunes a layer's weights by magnitude, on a schedule, inside `fit`.

    The layer computes with `weight * mask`; each mask is a non-trainable
    weight of the wrapper, recomputed from the weight magnitudes at the
    schedule's update steps inside the compiled train step. Pruned entries get
    zero gradient and stay exactly zero in the layer's computation between
    updates. Masks only ever shrink: magnitudes are ranked on `weight * mask`.

    Args:
        layer: the layer to prune (see `tfcompress.pruning.registry`).
        pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, 0)`.
        block_size: `(height, width)` blocks pruned together (2-D weights only).
        block_pooling_type: `"AVG"` or `"MAX"`, a block's magnitude.
        sparsity_m_by_n: `(m, n)`, e.g. `(2, 4)`: m zeros in every n input
            channels (Dense and Conv2D kernels). Updated at the schedule's
            update steps; the schedule's sparsity value is not used.
        weight_names: names of the inner layer's weights to prune, overriding
            the registry (e.g. `["kernel"]` for a DepthwiseConv2D).
        allocation: `"uniform"` (each weight to the schedule's sparsity),
            `"global"` or `"erk"`: how the model's sparsity is shared out among
            the wrappers of one model that ask for it (see
            `tfcompress.pruning.allocation`). Unstructured masks only.
        criterion: `"magnitude"` (|w|) or `"fisher"`: w² times the diagonal
            empirical Fisher, a running mean of the squared gradients of the
            weight over the training steps (the Optimal Brain Damage saliency).
            Unstructured masks only.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    model = keras.Sequential([
        keras.Input((4,)),
        tfc.pruning.PruneLowMagnitude(
            keras.layers.Dense(3),
            pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1)),
    ])
    model.compile("sgd", "mse")
    model.fit(keras.ops.ones((8, 4)), keras.ops.ones((8, 3)), verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    ```
    """

    order = 10
    step_driven = True

    def __init__(self, layer, pruning_schedule=None, block_size=(1, 1),
                 block_pooling_type="AVG", sparsity_m_by_n=None,
                 weight_names=None, allocation="uniform", criterion="magnitude", **kwargs):
        if isinstance(layer, keras.Model):
            raise ValueError(
                "PruneLowMagnitude wraps a layer; to prune a model use "
                "prune_low_magnitude(model)."
            )
        if weight_names is None and not registry.has_rule(layer) and layer.weights:
            raise registry.unsupported_error(layer)
        pruning_schedule = as_schedule(pruning_schedule)
        block_size = tuple(int(b) for b in block_size)
        if len(block_size) != 2 or min(block_size) < 1:
            raise ValueError(
                f"block_size must be two positive ints, got {block_size}."
            )
        if block_pooling_type not in ("AVG", "MAX"):
            raise ValueError(
                f"block_pooling_type must be 'AVG' or 'MAX', got {block_pooling_type!r}."
            )
        if sparsity_m_by_n is not None:
            sparsity_m_by_n = tuple(int(v) for v in sparsity_m_by_n)
            if len(sparsity_m_by_n) != 2 or not 0 < sparsity_m_by_n[0] < sparsity_m_by_n[1]:
                raise ValueError(
                    "sparsity_m_by_n must be (m, n) with 0 < m < n, e.g. (2, 4), "
                    f"got {sparsity_m_by_n}."
                )
            if block_size != (1, 1):
                raise ValueError("Use either block_size or sparsity_m_by_n, not both.")
        allocations.check(allocation)
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(map(repr, CRITERIA))}; "
                             f"got {criterion!r}.")
        if (allocation, criterion) != ("uniform", "magnitude") and (
                block_size != (1, 1) or sparsity_m_by_n):
            raise ValueError(
                f"allocation={allocation!r} and criterion={criterion!r} rank single weights; "
                "block_size and sparsity_m_by_n choose their own pattern. Drop one of them.")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n
        self.weight_names = None if weight_names is None else list(weight_names)
        self.allocation = allocation
        self.criterion = criterion
        self.masks = []
        self.fisher = []

    def target_weights(self):
        layer = self.computing_layer()
        targets = registry.prunable_weights(layer, self.weight_names)
        for w in targets:
            if self.block_size != (1, 1) and len(w.shape) != 2:
                raise ValueError(
                    f"block_size {self.block_size} needs 2-D weights, but "
                    f"'{layer.name}' weight '{w.name}' has shape {w.shape}. "
                    "Use block sparsity on Dense/Embedding layers only."
                )
            if self.sparsity_m_by_n and len(w.shape) not in (2, 4):
                raise ValueError(
                    f"sparsity_m_by_n needs 2-D (Dense) or 4-D (Conv2D) weights, "
                    f"but '{layer.name}' weight '{w.name}' has shape {w.shape}."
                )
        if getattr(layer, "quantization_mode", None):
            raise ValueError(
                f"Layer '{layer.name}' is already quantized "
                f"({layer.quantization_mode}); prune the float model, then "
                "quantize."
            )
        return targets

    def build_state(self, targets):
        layer = self.computing_layer()
        # An Embedding table's mask is bool: a quarter of a float32 table, not a whole one
        # (bool, not int8: collective ops broadcast no int8 under MultiWorkerMirroredStrategy).
        table = getattr(layer, "_embeddings", None) if isinstance(
            layer, keras.layers.Embedding) else None
        self.masks = [
            self.add_weight(
                name=rules.relative_path(w, layer).replace("/", "_") + "_mask", shape=w.shape,
                dtype="bool" if w is table else w.dtype,
                initializer="ones", trainable=False, aggregation="none",
            )
            for w in targets
        ]
        if self.criterion == "fisher":
            self.fisher = [
                self.add_weight(name=m.name[:-len("_mask")] + "_fisher", shape=w.shape,
                                initializer="zeros", trainable=False, aggregation="none")
                for w, m in zip(targets, self.masks)]
        self.add_step_variables("pruning_step")

    def rows_supported(self):
        """Row-by-row lookups need no whole-table gradient; Fisher scores do."""
        return self.criterion == "magnitude"

    @classmethod
    def link(cls, wrappers):
        """Shares out sparsity among the wrappers of a model that ask for `"erk"` or
        `"global"` allocation (the step callback calls this before `fit`)."""
        for kind in ("erk", "global"):
            group = [w for w in wrappers if w.allocation == kind and w.built and w._targets]
            if not group:
                continue
            schedules = {repr(w.pruning_schedule) for w in group}
            if len(schedules) > 1:
                raise ValueError(
                    f"allocation={kind!r} shares one schedule's sparsity among layers, but "
                    f"the wrappers have {len(schedules)} schedules: {sorted(schedules)}. "
                    "Give them one pruning_schedule.")
            if kind == "erk":
                final = group[0].pruning_schedule.end_sparsity()
                shapes = [tuple(t.shape) for w in group for t in w._targets]
                shares = iter(allocations.erk_sparsities(shapes, final))
                for w in group:
                    scales = [next(shares) / final if final else 1.0 for _ in w._targets]
                    object.__setattr__(w, "_erk_scales", scales)
            else:
                for i, w in enumerate(group):  # the first computes every mask of the group
                    object.__setattr__(w, "_global_group", _Group(group if i == 0 else []))

    @property
    def pruning_step(self):
        """The step the masks were last computed at (saved with the model)."""
        return self.step_variable()

    def transform_weights(self, values, training):
        if training:
            self.update_masks()
            if self.fisher:
                values = [_accumulate_squared_gradient(w, f) for w, f in zip(values, self.fisher)]
        return [w * keras.ops.cast(m.value, w.dtype) for w, m in zip(values, self.masks)]

    def transform_rows(self, rows, ids, training):
        """An Embedding's gathered rows times their mask rows (see `core.rows`)."""
        if training:
            self.update_masks()
        # a gather of the variable reads its rows, where `take` would read (copy) all of it
        return rows * keras.ops.cast(tf.gather(self.masks[0].value, ids), rows.dtype)

    def update_masks(self):
        """Training-time step: recompute the masks if the schedule says so."""
        if not self._targets:
            return
        step = self.training_step()
        should_prune, sparsity = self.pruning_schedule(step)
        tf.cond(should_prune, lambda: self._update_masks(self._targets, sparsity),
                lambda: tf.no_op())

    def _update_masks(self, targets, sparsity):
        if self.allocation == "global":
            group = self._linked("_global_group").wrappers
            if group:
                scores = [s for w in group for s in w._scores()]
                kept = [m.value for w in group for m in w.masks]
                new = allocations.global_masks(scores, kept, sparsity)
                for m, value in zip([m for w in group for m in w.masks], new):
                    m.assign(tf.cast(value, m.dtype))
            return tf.no_op()
        scales = self._linked("_erk_scales") if self.allocation == "erk" else [1.0] * len(targets)
        for m, score, scale in zip(self.masks, self._scores(), scales):
            # `* m`: a pruned weight is never revived, even if a later target is
            # lower (e.g. a schedule restarted by hand).
            m.assign(self._new_mask(score, sparsity * scale, m))
        return tf.no_op()

    def _linked(self, name):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(
                f"'{self.name}' prunes with allocation={self.allocation!r}, which shares the "
                "model's sparsity among its layers, but it was not linked to them. Train "
                "with tfcompress.pruning.UpdatePruningStep() among the callbacks (it links "
                "them), or call PruneLowMagnitude.link(wrappers) in a custom loop.")
        return value

    def _scores(self):
        """What the masks rank, one per target: the weights (by magnitude), or
        w² · Fisher (a tiny floor keeps weights with no gradient ordered by size)."""
        if self.criterion == "magnitude":
            return [w.value for w in self._targets]
        return [tf.square(w.value) * (f.value + 1e-30) for w, f in zip(self._targets, self.fisher)]

    def _new_mask(self, weights, sparsity, mask):
        """The next value of `mask` (in its dtype), never reviving a pruned entry."""
        if self.block_size == (1, 1) and not self.sparsity_m_by_n:
            # no table-sized `weights * mask` nor float mask: a table's mask stays bool
            return masks.magnitude(weights, sparsity, mask.value, dtype=mask.dtype)
        kept = tf.cast(mask.value, weights.dtype)
        if self.sparsity_m_by_n:
            new = masks.m_by_n(weights * kept, *self.sparsity_m_by_n)
        else:
            new = masks.block(weights * kept, sparsity, self.block_size, self.block_pooling_type)
        return tf.cast(new * kept, mask.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            pruning_schedule=keras.saving.serialize_keras_object(self.pruning_schedule),
            block_size=list(self.block_size),
            block_pooling_type=self.block_pooling_type,
            sparsity_m_by_n=None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
            weight_names=self.weight_names,
            allocation=self.allocation,
            criterion=self.criterion,
        )
        return config


class _Group:
    """The wrappers sharing a global allocation, held where Keras's saving does not walk
    (a plain list attribute would be saved as a container of their variables)."""

    def __init__(self, wrappers):
        self.wrappers = list(wrappers)


def _accumulate_squared_gradient(value, fisher):
    """`value`, whose gradient, squared, goes into the running mean `fisher`."""
    @tf.custom_gradient
    def capture(w):
        def grad(upstream):
            gradient = upstream
            replicas = tf.distribute.get_replica_context()
            if replicas is not None and replicas.num_replicas_in_sync > 1:
                # the global batch's gradient, so every replica keeps the same scores
                gradient = replicas.all_reduce("mean", upstream)
            update = fisher.assign(FISHER_DECAY * fisher.value
                                   + (1 - FISHER_DECAY) * tf.square(gradient))
            with tf.control_dependencies([update]):
                return tf.identity(upstream)
        return tf.identity(w), grad
    return capture(tf.convert_to_tensor(value))
