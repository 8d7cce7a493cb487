"""Mixed-dimension tables, and tables that compose: QR / mixed-dim rows stored int8, pruned or
quantization-aware towers beside them, on a keras-rs DLRM."""

import os
import warnings

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfcompress as tfc
from tfcompress import examples
from tests.helpers import run_tflite


def _zipf_ids(rows, n, alpha=1.1, seed=0):
    p = 1.0 / np.arange(1, rows + 1) ** alpha
    ids = np.random.default_rng(seed).choice(rows, size=n, p=p / p.sum())
    return np.random.default_rng(seed + 1).permutation(rows)[ids].astype("int32")  # ids shuffled


def test_mixed_dim_gives_frequent_ids_wide_rows_and_rare_ids_narrow_ones(tmp_path):
    ids = _zipf_ids(5000, 20000)
    counts = np.bincount(ids, minlength=5000)
    inputs = keras.Input((), dtype="int32", name="id")
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Embedding(5000, 32, name="table")(inputs)))
    small = tfc.embeddings.compress_embeddings(model, "mixed_dim", frequencies=counts)
    table = small.get_layer("table")
    assert isinstance(table, tfc.embeddings.MixedDimEmbedding)
    assert table.block_rows == (5, 45, 450, 4500)
    assert table.block_dims[0] == 32 and list(table.block_dims) == sorted(table.block_dims,
                                                                          reverse=True)
    assert table.block_dims[-1] <= 8
    ranks = np.asarray(table.ranks)
    assert ranks[np.argmax(counts)] == 0  # the most read id has the widest row
    assert set(ranks[np.argsort(counts)[:100]]) <= set(range(500, 5000))  # rare ones: narrowest
    params = sum(int(np.prod(w.shape)) for w in table.trainable_weights)
    assert params < 5000 * 32 / 5, params
    small.compile(keras.optimizers.Adam(1e-2), "mse")
    target = np.random.default_rng(0).normal(size=5000).astype("float32")
    loss = small.fit(ids, target[ids], batch_size=256, epochs=4, verbose=0).history["loss"]
    assert loss[-1] < 0.7 * loss[0]
    path = os.path.join(tmp_path, "m.keras")
    small.save(path)
    first = ids[:64]
    np.testing.assert_allclose(keras.saving.load_model(path).predict(first, verbose=0),
                               small.predict(first, verbose=0), atol=1e-6)
    content = tfc.export.to_tflite(small)
    np.testing.assert_allclose(run_tflite(content, first).reshape(-1),
                               small.predict(first, verbose=0).reshape(-1), atol=1e-5)


def test_mixed_dim_needs_frequencies():
    with pytest.raises(ValueError, match="needs frequencies="):
        tfc.embeddings.compress_embeddings(examples.click_model(), "mixed_dim")
    with pytest.raises(ValueError, match="200 ids of 'user_embedding'"):
        tfc.embeddings.compress_embeddings(examples.click_model(), "mixed_dim",
                                           layers=["user_embedding"], frequencies=np.ones(10))
    with pytest.raises(ValueError, match="sum to input_dim"):
        tfc.embeddings.MixedDimEmbedding(10, 4, block_rows=(3, 3), block_dims=(4, 2))


def _int8_tensors(content):
    details = Interpreter(model_content=content).get_tensor_details()
    return {tuple(d["shape"]) for d in details if d["dtype"] == np.int8}


@pytest.mark.parametrize("method,bits,tower", [("qr", 8, "prune"), ("mixed_dim", 4, "qat")])
def test_small_tables_store_int8_rows_beside_pruned_or_qat_towers(method, bits, tower):
    keras.utils.set_random_seed(0)
    model, x, y = examples.dlrm(n=512)
    options = ({"num_buckets": 8} if method == "qr" else
               {"frequencies": {f"table{i}": np.bincount(x[f"cat{i}"], minlength=50) + 1
                                for i in range(3)}, "alpha": 0.5})
    small = tfc.embeddings.compress_embeddings(model, method, **options)
    small = tfc.embeddings.compress_embeddings(small, f"rowwise_int{bits}")
    assert len(tfc.core.find(small, tfc.embeddings.RowwiseQuantize)) == 3
    if tower == "prune":
        with warnings.catch_warnings():  # the row-wise tables are no weights "left dense"
            warnings.simplefilter("error")
            small = tfc.pruning.prune_low_magnitude(
                small, pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=1))
    else:
        small = tfc.quantization.quantize_model(small)
    small.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    small.fit(x, y, batch_size=64, epochs=1, verbose=0,
              callbacks=[tfc.pruning.UpdatePruningStep()])
    plain = tfc.strip(small)
    tables = [plain.get_layer(f"table{i}") for i in range(3)]
    assert all(t.bits == bits and not t.row_tables() for t in tables)
    first = {k: v[:64] for k, v in x.items()}
    np.testing.assert_allclose(plain.predict(first, verbose=0), small.predict(first, verbose=0),
                               atol=1e-5)
    table = tables[0]
    if method == "qr":  # quotient 7 rows, remainder 8, both int8
        assert table.quotient_values.shape == (7, 8) and table.remainder_values.dtype == "int8"
        dense = [w for w in plain.get_layer("top").weights if w.name == "kernel"][0]
        assert np.mean(np.asarray(dense) == 0) >= 0.5  # the pruned tower beside them
        content = tfc.export.to_tflite(plain)
        atol = 1e-5
    else:
        content = tfc.export.to_tflite(plain, mode="int8")
        atol = 0.05  # a fully-int8 graph against its QAT simulation: a few output steps
    stored = {tuple(getattr(table, f"{name}_values").shape)
              for name in table._table_widths}
    assert stored <= _int8_tensors(content), (stored, _int8_tensors(content))
    np.testing.assert_allclose(run_tflite(content, first).reshape(-1),
                               plain.predict(first, verbose=0).reshape(-1), atol=atol)
