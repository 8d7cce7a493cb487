"""Row-structured pruning of an Embedding table: the rows the data rarely reads go, whole."""

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import WeightWrapper
from tfcompress.core import rows as rows_lib
from tfcompress.embeddings.tables import Table


@keras.saving.register_keras_serializable("tfcompress")
class PruneRows(WeightWrapper):
    """Prunes whole rows of an Embedding table, the least read first, on a schedule.

    Counts how often each row is read in training (only the ids of each
    batch: the cost follows the batch, see `core.rows`), and at the
    schedule's update steps keeps the `1 - sparsity` most-read rows (ties:
    the larger row norm). Pruned rows read as zeros and get no gradient.
    `tfcompress.strip` gives a `RemappedEmbedding`: an int32 id → row map and
    only the kept rows (plus one zero row), so the table really shrinks.
    Train with the step callback (`tfcompress.pruning.UpdatePruningStep()`,
    the same as `tfcompress.core.steps.StepCallback()`).

    Args:
        layer: a `keras.layers.Embedding`.
        pruning_schedule: a `PruningSchedule` (`ConstantSparsity`,
            `PolynomialDecay`), its sparsity the fraction of rows removed.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.embeddings.PruneRows(
        keras.layers.Embedding(1000, 16),
        pruning_schedule=tfc.pruning.ConstantSparsity(0.8, 0, frequency=100))
    ```
    """

    order = 10
    step_driven = True

    def __init__(self, layer, pruning_schedule=None, **kwargs):
        if type(layer) is not keras.layers.Embedding:
            raise ValueError(f"PruneRows wraps a keras.layers.Embedding; got "
                             f"{type(layer).__name__} '{layer.name}'.")
        if isinstance(pruning_schedule, dict):  # from a saved config
            pruning_schedule = keras.saving.deserialize_keras_object(pruning_schedule)
        if not callable(pruning_schedule) or not hasattr(pruning_schedule, "get_config"):
            raise ValueError("PruneRows needs a pruning_schedule, e.g. "
                             "tfcompress.pruning.ConstantSparsity(0.8, 0, frequency=100).")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule

    def target_weights(self):
        return [self.computing_layer()._embeddings]

    def build_state(self, targets):
        rows = targets[0].shape[0]
        self.row_mask = self.add_weight(name="row_mask", shape=(rows,), dtype="bool",
                                        initializer="ones", trainable=False, aggregation="none")
        self.reads = self.add_weight(name="reads", shape=(rows,), initializer="zeros",
                                     trainable=False, aggregation="none")
        self.add_step_variables("pruning_step")

    @property
    def pruning_step(self):
        """The step the row mask was last computed at (saved with the model)."""
        return self.step_variable()

    def _update(self, sparsity):
        table = self._targets[0]
        kept = tf.cast(self.row_mask.value, "float32")
        norms = tf.sqrt(tf.reduce_sum(tf.square(table.value), axis=1))
        # reads first; the norm (< 1e6 times smaller than one read) only breaks ties
        score = (self.reads.value + tf.minimum(norms, 1.0) * 1e-6) * kept - (1.0 - kept)
        rows = tf.shape(score)[0]
        keep = tf.maximum(tf.cast(tf.round(tf.cast(rows, "float32") * (1.0 - sparsity)),
                                  "int32"), 1)
        order = tf.argsort(score, direction="DESCENDING", stable=True)
        ranks = tf.argsort(order, stable=True)
        self.row_mask.assign(tf.logical_and(ranks < keep, self.row_mask.value))
        return tf.no_op()

    def _schedule_step(self):
        should_prune, sparsity = self.pruning_schedule(self.training_step())
        tf.cond(should_prune, lambda: self._update(sparsity), lambda: tf.no_op())

    def transform_rows(self, rows, ids, training):
        if training:
            # every replica's ids: the same counts, so the same kept rows everywhere
            (flat,) = rows_lib.global_batch(tf.reshape(tf.cast(ids, "int32"), [-1]))
            self.reads.value.scatter_add(tf.IndexedSlices(tf.ones_like(flat, "float32"), flat))
            self._schedule_step()
        mask = keras.ops.cast(keras.ops.take(self.row_mask.value, ids, axis=0), rows.dtype)
        return rows * keras.ops.expand_dims(mask, -1)

    def transform_weights(self, values, training):
        mask = tf.cast(self.row_mask.value, values[0].dtype)
        return [values[0] * mask[:, None]]

    def kept_rows(self):
        """Indices of the rows still kept."""
        return np.flatnonzero(np.asarray(self.row_mask))

    def strip(self):
        layer = self.computing_layer()
        table = self.baked_weights(keep=lambda w: w is not self)[0]
        return RemappedEmbedding.from_rows(layer, table, self.kept_rows())

    def get_config(self):
        return {**super().get_config(),
                "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule)}


@keras.saving.register_keras_serializable("tfcompress")
class RemappedEmbedding(Table):
    """An Embedding holding only some rows: an int32 map from ids to rows, then the rows.

    Ids whose row was pruned map to one extra all-zero row. Two GATHERs in
    TFLite; `input_dim * 4` bytes of map plus the kept rows. Made by
    stripping `PruneRows`.

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    layer = tfc.embeddings.RemappedEmbedding(4, 2, kept=2)
    layer.build()
    layer.set_weights([np.array([[1, 1], [2, 2], [0, 0]], "float32"),
                       np.array([0, 2, 1, 2], "int32")])
    assert np.allclose(layer(np.array([2, 3])), [[2, 2], [0, 0]])
    ```
    """

    def __init__(self, input_dim, output_dim, kept, mask_zero=False, **kwargs):
        super().__init__(input_dim, output_dim, mask_zero=mask_zero, **kwargs)
        self.kept = int(kept)

    def build(self, input_shape=None):
        # trainable first: the order Keras saves and loads a layer's variables in
        self.embeddings = self.add_weight(name="embeddings", shape=(self.kept + 1,
                                                                     self.output_dim),
                                          initializer="zeros")
        self.rows_of_ids = self.add_weight(name="rows_of_ids", shape=(self.input_dim,),
                                           dtype="int32", initializer="zeros", trainable=False)
        self.built = True

    @classmethod
    def from_rows(cls, embedding, table, kept):
        rows_of_ids = np.full(embedding.input_dim, len(kept), "int32")
        rows_of_ids[kept] = np.arange(len(kept), dtype="int32")
        layer = cls(embedding.input_dim, embedding.output_dim, len(kept),
                    mask_zero=embedding.mask_zero, name=embedding.name)
        layer.build()
        layer.set_weights([np.concatenate(
            [np.asarray(table)[kept], np.zeros((1, embedding.output_dim), "float32")]),
            rows_of_ids])
        return layer

    def call(self, inputs):
        rows = keras.ops.take(self.rows_of_ids, self._ids(inputs), axis=0)
        return keras.ops.take(self.embeddings, rows, axis=0)

    def get_config(self):
        return {**super().get_config(), "kept": self.kept}
