"""`PruneFilters`: whole channels (filters, units, heads) masked together, on a schedule."""

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import WeightWrapper, rules
from tfcompress.core.channels import Block, mask_vector, positions
from tfcompress.pruning.schedule import as_schedule

#: The ways a channel's importance is scored (see `PruneFilters`).
CRITERIA = ("l2", "l1", "bn_gamma", "taylor")
#: How fast the Taylor scores forget: each step keeps this much of the last score.
TAYLOR_DECAY = 0.9


def _slot(name):
    return name.replace("/", "_").replace(":", "_")


@keras.saving.register_keras_serializable("tfcompress")
class PruneFilters(WeightWrapper):
    """Masks whole channels of a layer's weights: the ones the graph couples, together.

    Made by `prune_filters`, which finds the channel groups of the model
    (`tfcompress.core.channels`) and wraps every layer that makes, carries
    or reads them. Each wrapper holds a 0/1 mask per group it touches and
    multiplies each weight axis that runs over that group by it: a conv's
    output filters and bias, the BatchNormalization scale and offset after
    it, the next kernel's input channels. Every wrapper of a group computes
    the same mask from the same scores at the schedule's update steps,
    inside the compiled train step, so the copies never differ. A channel
    masked to 0 is read by nobody, so `tfcompress.shrink` removes it
    without changing an output.

    The schedule's sparsity is the fraction of each group's channels
    removed (at least one channel stays). Scores (`criterion`):

    - `"l2"`/`"l1"`: the norm of the channel's producing weights (all
      producers of a residual group together);
    - `"bn_gamma"`: `|gamma|` of the group's BatchNormalization layers
      (network slimming); groups without one use `"l2"`;
    - `"taylor"`: first-order Taylor importance, `(sum over the filter of
      w * dL/dw)^2`, averaged over training steps (decay `TAYLOR_DECAY`).

    Masks only shrink: a removed channel never comes back.

    Args:
        layer: the layer to wrap.
        channels: the weight axes it masks, as `prune_filters` writes them:
            `[{"weight": path in the layer, "axis": int, "role": "out"|"chan"|"in",
            "blocks": [{"segments": [[group, size], ...], "repeat": int}]}]`.
        pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, 0)`.
        criterion: one of `CRITERIA`.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
                             keras.layers.Dense(2)])
    model = tfc.pruning.prune_filters(
        base, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("sgd", "mse")
    model.fit(keras.ops.ones((8, 4)), keras.ops.ones((8, 2)), verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    small = tfc.pruning.shrink(model)   # hidden has 4 units
    ```
    """

    order = 10
    step_driven = True

    def __init__(self, layer, channels, pruning_schedule=None, criterion="l2", **kwargs):
        pruning_schedule = as_schedule(pruning_schedule)
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.criterion = criterion
        self.channels = [dict(c) for c in channels]
        self._uses = [(c["weight"], int(c["axis"]), c["role"], tuple(
            Block(tuple((g, int(n)) for g, n in b["segments"]), int(b["repeat"]))
            for b in c["blocks"])) for c in self.channels]
        self.channel_masks = {}
        object.__setattr__(self, "_sources", None)

    @property
    def groups(self):
        """`{group: size}` of the channel groups this wrapper masks."""
        found = {}
        for _, _, _, blocks in self._uses:
            for block in blocks:
                found.update((g, n) for g, n in block.segments if g is not None)
        return found

    def _weights_by_path(self):
        layer = self.computing_layer()
        return {rules.relative_path(w, layer): w for w in layer.weights}

    def target_weights(self):
        by_path = self._weights_by_path()
        missing = [path for path, *_ in self._uses if path not in by_path]
        if missing:
            raise ValueError(f"PruneFilters '{self.name}': layer '{self.computing_layer().name}' "
                             f"has no weights {missing}; it has {sorted(by_path)}.")
        return rules.unique([by_path[path] for path, _, role, _ in self._uses
                             if self._masked(by_path[path], role)])

    def _masked(self, weight, role):
        """Moving statistics keep their values: only what computes the channel is masked."""
        return role != "chan" or weight.trainable

    def build_state(self, targets):
        self.channel_masks = {
            group: self.add_weight(name=_slot(group) + "_channels", shape=(size,),
                                   initializer="ones", trainable=False, aggregation="none")
            for group, size in self.groups.items()}
        self.taylor_scores = {}
        if self.criterion == "taylor":
            by_path = self._weights_by_path()
            for path, axis, role, _ in self._uses:
                if role == "out" and len(by_path[path].shape) > 1:
                    self.taylor_scores[path] = self.add_weight(
                        name=_slot(path) + "_taylor", shape=(by_path[path].shape[axis],),
                        initializer="zeros", trainable=False, aggregation="none")
        self.add_step_variables("pruning_step")

    @property
    def pruning_step(self):
        """The step the masks were last computed at (saved with the model)."""
        return self.step_variable()

    # -- the masked values ----------------------------------------------------------
    def transform_weights(self, values, training):
        if training:
            self.update_masks()
        by_path = self._weights_by_path()
        masks = {g: m.value for g, m in self.channel_masks.items()}
        out = []
        for target, value in zip(self._targets, values):
            if training and self.criterion == "taylor":
                value = self._capture_taylor(target, value, by_path)
            for path, axis, role, blocks in self._uses:
                if by_path[path] is target and self._masked(target, role):
                    value = value * self._broadcast(mask_vector(blocks, masks), axis,
                                                    len(target.shape))
            out.append(value)
        return out

    @staticmethod
    def _broadcast(vector, axis, rank):
        shape = [1] * rank
        shape[axis] = -1
        return tf.reshape(vector, shape)

    def _capture_taylor(self, target, value, by_path):
        for path, axis, role, _ in self._uses:
            if by_path[path] is target and role == "out" and path in self.taylor_scores:
                score = self.taylor_scores[path]
                others = [a for a in range(len(target.shape)) if a != axis % len(target.shape)]

                @tf.custom_gradient
                def capture(w, score=score, others=others):
                    def grad(upstream):
                        contribution = tf.reduce_sum(w * upstream, axis=others)
                        update = score.assign(TAYLOR_DECAY * score
                                              + (1 - TAYLOR_DECAY) * contribution ** 2)
                        with tf.control_dependencies([update]):
                            return tf.identity(upstream)
                    return tf.identity(w), grad

                value = capture(tf.convert_to_tensor(value))
        return value

    # -- the schedule ---------------------------------------------------------------
    def update_masks(self):
        """Training-time step: recompute every group mask if the schedule says so."""
        if self._sources is None:
            raise RuntimeError(
                f"PruneFilters '{self.name}' does not know the other layers of its channel "
                "groups. Train it with tfcompress.pruning.UpdatePruningStep() among the "
                "callbacks (it links them before fit starts), or call "
                "tfcompress.pruning.PruneFilters.link(model) first.")
        should_prune, sparsity = self.pruning_schedule(self.training_step())
        tf.cond(should_prune, lambda: self._update(sparsity), lambda: tf.no_op())

    def _update(self, sparsity):
        for group, mask in self.channel_masks.items():
            score = self._score(group) * mask.value
            size = mask.shape[0]
            keep = tf.maximum(tf.cast(tf.round(size * (1.0 - sparsity)), "int32"), 1)
            order = tf.argsort(score, direction="DESCENDING", stable=True)
            ranks = tf.argsort(order, stable=True)
            mask.assign(tf.cast(ranks < keep, mask.dtype) * mask.value)
        return tf.no_op()

    def _score(self, group):
        kind, sources = self._sources[group]
        total = 0.0
        for value, axis, blocks in sources:
            value = tf.convert_to_tensor(value)
            if kind in ("l2", "l1"):
                rank = len(value.shape)
                others = [a for a in range(rank) if a != axis % rank]
                value = (tf.reduce_sum(tf.square(value), axis=others) if kind != "l1"
                         else tf.reduce_sum(tf.abs(value), axis=others))
            elif kind == "bn_gamma":
                value = tf.abs(value)
            total += tf.reduce_sum(tf.gather(value, positions(blocks, group)), axis=0)
        return total

    @classmethod
    def link(cls, model_or_wrappers):
        """Tells every `PruneFilters` wrapper which weights score its groups.

        `UpdatePruningStep` calls it before `fit`; call it yourself only in a
        custom loop. Takes a model or a list of wrappers.

        Example:

        ```python
        import keras
        import tfcompress as tfc
        model = tfc.pruning.prune_filters(keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)]))
        tfc.pruning.PruneFilters.link(model)
        ```
        """
        from tfcompress.core import find

        wrappers = (find(model_or_wrappers, cls) if isinstance(model_or_wrappers, keras.Model)
                    else [w for w in model_or_wrappers if isinstance(w, cls)])
        norms, gammas, taylors, criteria = {}, {}, {}, {}
        for wrapper in wrappers:
            if not wrapper.built:
                continue
            by_path = wrapper._weights_by_path()
            layer = wrapper.computing_layer()
            for path, axis, role, blocks in wrapper._uses:
                weight = by_path[path]
                for group in {g for b in blocks for g, _ in b.segments if g is not None}:
                    criteria.setdefault(group, wrapper.criterion)
                    if role == "out" and len(weight.shape) > 1:
                        norms.setdefault(group, []).append((weight, axis, blocks))
                        if path in wrapper.taylor_scores:
                            taylors.setdefault(group, []).append(
                                (wrapper.taylor_scores[path], 0, blocks))
                    if (role == "chan" and isinstance(layer, keras.layers.BatchNormalization)
                            and weight is getattr(layer, "gamma", None)):
                        gammas.setdefault(group, []).append((weight, 0, blocks))
        for wrapper in wrappers:
            sources = {}
            for group in wrapper.groups:
                criterion = criteria.get(group, wrapper.criterion)
                if criterion == "bn_gamma" and gammas.get(group):
                    sources[group] = ("bn_gamma", gammas[group])
                elif criterion == "taylor" and taylors.get(group):
                    sources[group] = ("taylor", taylors[group])
                else:
                    sources[group] = ("l1" if criterion == "l1" else "l2", norms.get(group, []))
            object.__setattr__(wrapper, "_sources", sources)
        return wrappers

    def kept_channels(self):
        """`{group: number of channels kept}` (mask entries still 1)."""
        return {g: int(np.asarray(m).sum()) for g, m in self.channel_masks.items()}

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, criterion=self.criterion,
                      pruning_schedule=keras.saving.serialize_keras_object(self.pruning_schedule))
        return config


def warn_missing_gamma(groups):
    """One warning naming the groups that `bn_gamma` scores by `l2` (no BatchNormalization)."""
    if groups:
        warnings.warn(
            f"criterion='bn_gamma': {len(groups)} channel group(s) have no BatchNormalization "
            f"to read gamma from and are scored by 'l2' instead: {sorted(groups)[:8]}.",
            UserWarning, stacklevel=3)
