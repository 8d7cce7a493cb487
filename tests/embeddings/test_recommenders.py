"""Every method on the three recommender architectures (keras-rs DCN-v2, keras-rs DLRM, two
towers), trained on Zipf-distributed click logs, stripped and run in LiteRT."""

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress import examples
from tests.helpers import run_tflite

USERS, ITEMS, DIM = 1_000, 200, 8


def _compress(model, method, x):
    if method == "mixed_dim":
        frequencies = {"user_table": np.bincount(x["user"], minlength=USERS),
                       "item_table": np.bincount(x["item"], minlength=ITEMS)}
        return tfc.embeddings.compress_embeddings(
            model, "mixed_dim", layers=["user_table", "item_table"], frequencies=frequencies,
            alpha=0.5), []
    if method == "prune_rows":
        schedule = tfc.pruning.ConstantSparsity(0.75, begin_step=0, frequency=4)
        return tfc.embeddings.compress_embeddings(
            model, "prune_rows", layers=["user_table"], pruning_schedule=schedule), [
            tfc.pruning.UpdatePruningStep()]
    first, bits = method.split(" + rowwise_int")
    small = tfc.embeddings.compress_embeddings(model, first, layers=["user_table", "item_table"],
                                               **({"num_buckets": 50} if first == "hashed" else {}))
    return tfc.embeddings.compress_embeddings(small, f"rowwise_int{bits}",
                                              layers=["user_table", "item_table"]), []


# `smaller`: float32 table bytes over the flatbuffer's. Mixed-dim's int32 rank map is 4 of
# the 32 bytes an id had at dim 8; prune_rows keeps a quarter of the user rows (+ a zero
# row and an int32 id map) beside the whole item table: 38,400 / 18,432.
@pytest.mark.parametrize("kind,method,smaller", [
    ("dcn", "mixed_dim", 3.5), ("dlrm", "qr + rowwise_int4", 40),
    ("two_tower", "prune_rows", 2.0), ("two_tower", "hashed + rowwise_int8", 13)])
def test_recommender_tables_compress_train_and_run_in_litert(kind, method, smaller):
    x, y = examples.zipf_click_logs(8192, users=USERS, items=ITEMS, seed=1)
    if kind != "dlrm":
        del x["hour"]
    keras.utils.set_random_seed(0)
    dense = examples.recommender(kind, users=USERS, items=ITEMS, dim=DIM)
    model, callbacks = _compress(dense, method, x)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(x, y, batch_size=256, epochs=2, verbose=0, callbacks=callbacks)
    plain = tfc.strip(model)
    first = {k: v[:64] for k, v in x.items()}
    expected = plain.predict(first, verbose=0).reshape(-1)
    np.testing.assert_allclose(expected, model.predict(first, verbose=0).reshape(-1), atol=1e-5)
    assert expected.std() > 1e-3  # it learned something, not a constant

    content = tfc.export.to_tflite(plain)  # builtins only (to_tflite's default)
    np.testing.assert_allclose(run_tflite(content, first).reshape(-1), expected, atol=1e-5)
    tables = ("user_table", "item_table")
    before = sum(dense.get_layer(t).embeddings.numpy().nbytes for t in tables)
    after = tfc.export.census.table_bytes(content)
    if kind == "dlrm":  # the 24-row hour table stays float32 beside them
        after -= 24 * DIM * 4
    assert before / after >= smaller, (before, after)
