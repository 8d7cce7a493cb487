"""`PruneLowMagnitude`: a layer whose chosen weights are multiplied by 0/1 masks."""

import keras
import tensorflow as tf

from tfcompress.core import WeightWrapper, rules
from tfcompress.pruning import masks, registry
from tfcompress.pruning.schedule import as_schedule


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
                 weight_names=None, **kwargs):
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
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = sparsity_m_by_n
        self.weight_names = None if weight_names is None else list(weight_names)
        self.masks = []

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
        self.add_step_variables("pruning_step")

    @property
    def pruning_step(self):
        """The step the masks were last computed at (saved with the model)."""
        return self.step_variable()

    def transform_weights(self, values, training):
        if training:
            self.update_masks()
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
        for w, m in zip(targets, self.masks):
            # `* m`: a pruned weight is never revived, even if a later target is
            # lower (e.g. a schedule restarted by hand).
            m.assign(self._new_mask(w.value, sparsity, m))
        return tf.no_op()

    def _new_mask(self, weights, sparsity, mask):
        """The next value of `mask` (in its dtype), never reviving a pruned entry."""
        if self.block_size == (1, 1) and not self.sparsity_m_by_n:
            # no table-sized `weights * mask` nor float mask: a table's mask stays int8
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
        )
        return config
