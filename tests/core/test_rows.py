"""Embedding lookups row by row: the same outputs as whole-table transforms, sparse gradients."""

import keras
import pytest
import numpy as np
import tensorflow as tf

import tfcompress as tfc
from tfcompress.core import rows


def _table_model(wrap):
    ids = keras.Input((3,), dtype="int32")
    vectors = wrap(keras.layers.Embedding(500, 8, name="table"))(ids)
    return keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(vectors)))


def test_pruned_rows_equal_the_masked_table_and_the_gradient_stays_sparse(rng):
    layer = tfc.pruning.PruneLowMagnitude(
        keras.layers.Embedding(500, 8),
        pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1000))
    ids = rng.integers(0, 500, (16, 3)).astype("int32")
    layer(ids)
    assert rows.applies(layer) and layer.masks[0].dtype == "bool"
    layer.masks[0].assign((rng.random((500, 8)) > 0.5).astype("bool"))
    table = np.asarray(layer.layer.embeddings) * np.asarray(layer.masks[0])
    np.testing.assert_allclose(layer(ids), table[ids], rtol=0, atol=0)
    tfc.core.steps.bind([layer], tf.Variable(5, dtype="int64"))  # a step, no update at it
    with tf.GradientTape() as tape:
        out = layer(ids, training=True)
    np.testing.assert_allclose(out, table[ids], rtol=0, atol=0)
    grad = tape.gradient(out, layer.layer.embeddings.value)
    assert isinstance(grad, tf.IndexedSlices)  # only the rows the batch read
    np.testing.assert_array_equal(tfc.strip(keras.Sequential([keras.Input((3,), dtype="int32"),
                                                              layer])).layers[0].embeddings,
                                  table)


def test_quantized_rows_equal_the_fake_quantized_table(rng):
    model = tfc.quantization.quantize_model(_table_model(lambda layer: layer))
    wrapper = model.get_layer("quant_table")
    assert rows.applies(wrapper)
    x = rng.integers(0, 500, (64, 3)).astype("int32")
    model.compile("adam", "mse")
    model.fit(x, rng.normal(size=(64, 1)), batch_size=16, verbose=0)
    # a training lookup of every row after the last update: the range is the table's
    wrapper((np.arange(501) % 500).reshape(167, 3).astype("int32"), training=True)
    table = np.asarray(wrapper.layer.embeddings)
    (weights,) = wrapper._weight_vars
    low, high = float(np.asarray(weights["min"])), float(np.asarray(weights["max"]))
    assert high == np.abs(table).max() and low == -high  # symmetric, the whole table's
    expected = wrapper._weight_quantizers[0]._fake_quant(table, low, high)  # the whole table
    got = rows.lookup(wrapper, x[:4], training=False)  # before the layer's output range
    np.testing.assert_allclose(got, np.asarray(expected)[x[:4]], atol=1e-6)


def test_row_extremes_fill_once_then_follow_the_rows_read(rng):
    layer = keras.layers.Embedding(1000, 8)
    layer.build()
    table = layer.embeddings
    table.assign(rng.normal(size=(1000, 8)).astype("float32"))
    kept = rows.RowExtremes(keras.layers.Layer(), "table", table)

    def read(*ids):
        ids = np.asarray(ids, "int32")
        return np.asarray(kept.update(table, None, tf.gather(table.value, ids), ids))

    value = np.asarray(table)
    np.testing.assert_array_equal(read(1, 2), [value.min(), value.max()])  # filled, once
    table.value.scatter_update(tf.IndexedSlices(tf.constant([[9.0] * 8]), [600]))
    np.testing.assert_array_equal(read(1, 2), [value.min(), value.max()])  # row 600 not read
    np.testing.assert_array_equal(read(600), [value.min(), 9.0])
    table.value.scatter_update(tf.IndexedSlices(tf.zeros((1, 8)), [600]))
    rest = np.delete(value, 600, axis=0)
    np.testing.assert_array_equal(read(600, 3), [min(rest.min(), 0.0), max(rest.max(), 0.0)])

    mask = keras.Variable(np.ones((1000, 8), bool), dtype="bool")
    mask.value.scatter_update(tf.IndexedSlices(tf.zeros((1, 8), bool),
                                               [int(value.max(1).argmax())]))
    masked = rows.RowExtremes(keras.layers.Layer(), "masked", table)
    ids = np.array([5], "int32")
    got = masked.update(table, mask, tf.gather(table.value, ids) * tf.cast(
        tf.gather(mask.value, ids), "float32"), ids)
    expected = np.asarray(table) * np.asarray(mask)
    np.testing.assert_array_equal(got, [expected.min(), expected.max()])


@pytest.mark.parametrize("size", [1, 10, 1001, 70001])
def test_row_extremes_equal_the_rows_as_last_read(size, rng):
    """Against a reference that keeps every row as a batch last read it: random
    table updates, random reads, blocks of ceil(sqrt(rows / 256)) (1, 2 with a padded
    last one, 17 with a padded last one)."""
    layer = keras.layers.Embedding(size, 4)
    layer.build()
    table = layer.embeddings
    table.assign(rng.uniform(0.5, 1.0, size=(size, 4)).astype("float32"))  # all positive
    kept = rows.RowExtremes(keras.layers.Layer(), "table", table)
    last_read = None
    for _ in range(30):
        changed = rng.integers(size, size=3)
        table.value.scatter_update(tf.IndexedSlices(
            rng.normal(scale=3.0, size=(3, 4)).astype("float32"), changed))
        ids = rng.integers(size, size=int(rng.integers(1, 6))).astype("int32")
        got = kept.update(table, None, tf.gather(table.value, ids), ids)
        if last_read is None:  # the first update fills from the whole table
            last_read = np.asarray(table).copy()
        last_read[ids] = np.asarray(table)[ids]
        # zero is always inside, as in a quantization range
        np.testing.assert_array_equal(got, [min(last_read.min(), 0.0), max(last_read.max(), 0.0)])


def test_wrappers_that_need_the_whole_table_keep_it():
    subclass = type("MyEmbedding", (keras.layers.Embedding,), {})
    layer = tfc.pruning.PruneLowMagnitude(subclass(50, 4), weight_names=["embeddings"])
    layer(np.zeros((2,), "int32"))
    assert not rows.applies(layer)  # a subclass may compute differently
    clustered = tfc.clustering.cluster_weights(keras.layers.Embedding(50, 4), number_of_clusters=4)
    clustered(np.zeros((2,), "int32"))
    assert not rows.applies(clustered)
