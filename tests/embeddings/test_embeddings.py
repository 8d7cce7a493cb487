"""Embedding tables compressed row-wise: trained in fit, stored int8 in .keras and TFLite."""

import os

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples
from tfcompress.core import rows


@pytest.mark.parametrize("bits", [8, 4])
def test_rowwise_tables_train_strip_and_export_as_int8(bits, tmp_path):
    features, clicks = examples.click_logs(n=4096)
    keras.utils.set_random_seed(0)
    model = tfc.embeddings.compress_embeddings(examples.click_model(), f"rowwise_int{bits}",
                                               min_rows=100)
    wrapped = {w.layer.name for w in tfc.core.find(model, tfc.embeddings.RowwiseQuantize)}
    assert wrapped == {"user_embedding", "item_embedding"}  # context has 8 rows
    assert all(rows.applies(w) for w in tfc.core.find(model, tfc.embeddings.RowwiseQuantize))
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(features, clicks, batch_size=256, epochs=2, verbose=0)
    plain = tfc.strip(model)
    table = plain.get_layer("user_embedding")
    assert isinstance(table, tfc.embeddings.Int8RowsEmbedding)
    values = np.asarray(table.embeddings_values)
    assert values.dtype == np.int8 and values.shape == (200, 16 * bits // 8)
    unpacked = np.asarray(tfc.embeddings.rowcodes.unpack_int4(values, 16)) if bits == 4 else values
    assert np.abs(unpacked).max() == 2 ** (bits - 1) - 1
    codes = np.asarray(table.embeddings_scales)
    assert codes.dtype == np.int8
    scales = np.asarray(tfc.embeddings.rowcodes.decode_scales(codes))
    np.testing.assert_allclose(plain.get_layer("user_embedding")(np.arange(200)),
                               unpacked * scales[:, None], atol=1e-7)
    first = {k: v[:64] for k, v in features.items()}
    np.testing.assert_allclose(plain.predict(first, verbose=0), model.predict(first, verbose=0),
                               atol=1e-5)
    path = os.path.join(tmp_path, "plain.keras")
    plain.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(first, verbose=0),
                               plain.predict(first, verbose=0), atol=1e-6)
    content = tfc.export.to_tflite(plain)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    tensors = {tuple(d["shape"]): d["dtype"] for d in interpreter.get_tensor_details()}
    width = 16 * bits // 8
    assert tensors[(200, width)] == np.int8 and tensors[(100, width)] == np.int8  # the tables
    assert tensors[(200,)] == np.int8  # the scale codes
    from tests.helpers import run_tflite

    np.testing.assert_allclose(run_tflite(content, first).reshape(-1),
                               plain.predict(first, verbose=0).reshape(-1), atol=1e-5)


@pytest.mark.parametrize("bits,ratio", [(8, 0.27), (4, 0.14)])
def test_a_large_table_takes_a_quarter_or_an_eighth_of_its_float_bytes(bits, ratio, rng):
    ids = keras.Input((), dtype="int32", name="id")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Embedding(20000, 32)(ids)))
    compressed = tfc.embeddings.compress_embeddings(model, f"rowwise_int{bits}")
    compressed.compile("adam", "mse")
    compressed.fit(rng.integers(0, 20000, 512), rng.normal(size=512), verbose=0)
    content = tfc.export.to_tflite(tfc.strip(compressed))
    float_bytes = len(tfc.export.to_tflite(model))
    assert float_bytes > 20000 * 32 * 4
    # int8: 32 + 1 bytes a row (values, scale code); int4: 16 + 1; float32: 128
    assert len(content) <= ratio * float_bytes, len(content) / float_bytes


def test_bad_input():
    with pytest.raises(ValueError, match="method must be one of"):
        tfc.embeddings.compress_embeddings(examples.click_model(), "rowwise_int2")
    with pytest.raises(ValueError, match="no Embedding layer named"):
        tfc.embeddings.compress_embeddings(examples.click_model(), layers=["users"])
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        tfc.embeddings.RowwiseQuantize(keras.layers.Embedding(10, 2), bits=3)


@pytest.mark.parametrize("method,options,rows", [
    ("qr", {"operation": "mult"}, 15 + 14 + 10 + 10),   # user 200: 14+15; item 100: 10+10
    ("qr", {"operation": "concat"}, 15 + 14 + 10 + 10),
    ("qr", {"operation": "add", "num_buckets": 20}, 10 + 20 + 5 + 20),
    ("hashed", {"num_buckets": 37, "num_hashes": 2}, 37 + 37),
])
def test_smaller_tables_train_save_and_run_in_litert(method, options, rows, tmp_path):
    features, clicks = examples.click_logs(n=4096)
    keras.utils.set_random_seed(0)
    dense = examples.click_model()
    model = tfc.embeddings.compress_embeddings(dense, method, min_rows=100, **options)
    tables = [model.get_layer(n) for n in ("user_embedding", "item_embedding")]
    assert sum(int(np.prod(w.shape)) for t in tables for w in t.weights) == rows * (
        16 if options.get("operation") != "concat" else 8)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    history = model.fit(features, clicks, batch_size=256, epochs=3, verbose=0)
    assert history.history["auc"][-1] > 0.6  # it learns
    first = {k: v[:64] for k, v in features.items()}
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path).predict(first, verbose=0),
                               model.predict(first, verbose=0), atol=1e-6)
    content = tfc.export.to_tflite(model)  # builtins only, or it raises
    from tests.helpers import run_tflite

    np.testing.assert_allclose(run_tflite(content, first).reshape(-1),
                               model.predict(first, verbose=0).reshape(-1), atol=1e-5)
    if method == "qr":  # every id keeps its own vector
        vectors = np.asarray(tables[0](np.arange(200)))
        assert len(np.unique(vectors.round(6), axis=0)) == 200


def test_qr_and_hashed_bad_options():
    with pytest.raises(ValueError, match="operation must be one of"):
        tfc.embeddings.QREmbedding(100, 8, operation="max")
    with pytest.raises(ValueError, match="even output_dim"):
        tfc.embeddings.QREmbedding(100, 7, operation="concat")
    with pytest.raises(ValueError, match="num_buckets must be in"):
        tfc.embeddings.HashedEmbedding(100, 8, num_buckets=10 ** 6)
    with pytest.raises(ValueError, match="takes no options"):
        tfc.embeddings.compress_embeddings(examples.click_model(), "rowwise_int8", bits=4)


def test_prune_rows_keeps_the_most_read_rows_and_strips_to_them(tmp_path):
    rng = np.random.default_rng(0)
    ids = keras.Input((), dtype="int32", name="id")
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Embedding(1000, 8,
                                                                          name="table")(ids)))
    schedule = tfc.pruning.ConstantSparsity(0.9, begin_step=20, frequency=1000)  # at step 20
    pruned = tfc.embeddings.compress_embeddings(model, "prune_rows", pruning_schedule=schedule)
    wrapper = pruned.get_layer("prune_rows_table")
    p = 1.0 / np.arange(1, 1001) ** 1.3
    x = rng.choice(1000, size=32 * 30, p=p / p.sum()).astype("int32")  # Zipf: low ids read most
    pruned.compile("adam", "mse")
    pruned.fit(x, rng.normal(size=len(x)), batch_size=32, verbose=0, shuffle=False,
               callbacks=[tfc.pruning.UpdatePruningStep()])
    kept = wrapper.kept_rows()
    assert len(kept) == 100
    reads = np.bincount(x[:32 * 20], minlength=1000)  # what steps 1-20 read
    assert reads[kept].min() >= np.sort(reads)[-100]  # the 100 most read (ties aside)
    np.testing.assert_array_equal(np.asarray(wrapper.reads), np.bincount(x, minlength=1000))
    first = x[:64]
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("prune_rows_table").kept_rows(), kept)
    plain = tfc.strip(pruned)
    table = plain.get_layer("table")
    assert isinstance(table, tfc.embeddings.RemappedEmbedding)
    assert table.embeddings.shape == (101, 8)
    np.testing.assert_allclose(plain.predict(first, verbose=0), pruned.predict(first, verbose=0),
                               atol=1e-6)
    path = os.path.join(tmp_path, "plain.keras")
    plain.save(path)
    content = tfc.export.to_tflite(keras.saving.load_model(path))
    from tests.helpers import run_tflite

    np.testing.assert_allclose(run_tflite(content, first).reshape(-1),
                               plain.predict(first, verbose=0).reshape(-1), atol=1e-5)
