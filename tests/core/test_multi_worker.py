"""Embedding techniques, pruning and QAT under MultiWorkerMirroredStrategy: two local workers.

Each worker is its own process, found by the other through TF_CONFIG on two 127.0.0.1
ports, and reads its own half of the data (auto-shard by DATA). Both must end with the
same masks, row reads, ranges and weights. Bounded: a worker that fails stops the other,
and both are killed after a timeout.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfcompress import examples

USERS, ITEMS, LOGS, BATCH = 200, 100, 640, 32  # 20 steps, 16 logs a worker a step

WORKER = textwrap.dedent(f"""
    import json, sys
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
    import keras
    import numpy as np
    import tfcompress as tfc
    from tfcompress import examples

    keras.utils.set_random_seed(0)
    features, clicks = examples.click_logs(n={LOGS}, users={USERS}, items={ITEMS}, seed=0)
    features = {{k: features[k] for k in ("user", "item")}}
    L = keras.layers
    with strategy.scope():
        inputs = {{k: keras.Input((), dtype="int32", name=k) for k in features}}
        user = L.Embedding({USERS}, 8, name="user_embedding")(inputs["user"])
        item = L.Embedding({ITEMS}, 8, name="item_embedding")(inputs["item"])
        x = L.Dense(16, activation="relu", name="tower")(L.Concatenate()([user, item]))
        model = keras.Model(inputs, L.Dense(1, activation="sigmoid", name="click")(x))
        model = tfc.embeddings.compress_embeddings(
            model, "prune_rows", layers=["user_embedding"],
            pruning_schedule=tfc.pruning.ConstantSparsity(0.5, 0, frequency=5))
        model = tfc.embeddings.compress_embeddings(model, "rowwise_int8",
                                                   layers=["item_embedding"])
        model = tfc.pruning.prune_low_magnitude(
            model, pruning_schedule=tfc.pruning.PolynomialDecay(0.0, 0.75, 0, 12, frequency=2),
            weight_names={{"tower": ["kernel"], "Dense": [], "PruneRows": [],
                          "RowwiseQuantize": []}})
        model = tfc.quantization.quantize_model(
            model, scheme=tfc.quantization.Default8BitPrunePreserveQuantizeScheme())
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
        model.optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensor_slices((features, clicks)).batch({BATCH},
                                                                         drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = strategy.experimental_distribute_dataset(data.with_options(options))

    # Keras 3's fit fails before its first step under MultiWorkerMirroredStrategy with more
    # than one worker (keras-team/keras#20585), so the same train step runs by hand, the
    # step callback driven as in any custom loop.
    @tf.function
    def train_step(batch):
        strategy.run(model.train_step, args=(batch,))

    callback = tfc.pruning.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    users = []
    for step, batch in enumerate(data):
        users += [int(u) for part in strategy.experimental_local_results(batch[0]["user"])
                  for u in part.numpy()]
        callback.on_train_batch_begin(step)
        train_step(batch)
        callback.on_train_batch_end(step)
    callback.on_train_end()

    def local(v):
        return np.asarray(v.value.numpy() if hasattr(v, "value") else v)

    state = {{v.path: local(v).tolist() for v in model.variables}}
    assert len(state) == len(model.variables), "variable paths are not unique"
    with open(sys.argv[1], "w") as f:
        json.dump({{"replicas": strategy.num_replicas_in_sync, "users": users,
                   "iterations": int(local(model.optimizer.iterations)),
                   "wrappers": sorted({{type(w).__name__ for w in
                                       tfc.core.find(model, tfc.core.WeightWrapper)}}),
                   "variables": state}}, f)
    if strategy.cluster_resolver.task_id == 0:  # the chief alone writes the model
        model.save(sys.argv[1].replace(".json", ".keras"))
    # leave together: a worker exiting while the other still runs is reported as a crash
    tf.function(lambda: strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)),
                                        axis=None))()
""")


def _free_ports(n):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path, chars=3000):
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if not line.startswith(("I0000", "W0000", "WARNING: All log messages"))]
    return "\n".join(lines)[-chars:]


def _run_workers(tmp_path, timeout=300):
    """Starts both workers, waits for both; a failure or the timeout kills them all."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs, logs = [], []
    try:
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": "worker", "index": index}})}
            log = tmp_path / f"worker{index}.log"
            with open(log, "w") as out:  # files, not pipes: a full pipe would stall a worker
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(tmp_path / f"worker{index}.json")],
                    env=env, stdout=out, stderr=subprocess.STDOUT))
            logs.append(log)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break  # the other worker would wait for it at the next collective
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if codes != [0, 0]:
        pytest.fail(f"workers exited {codes} (negative: killed after a failure or the "
                    f"{timeout} s timeout):\n" + "\n".join(
                        f"--- worker {i}:\n{_tail(log)}" for i, log in enumerate(logs)))
    return [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_two_workers_end_with_the_same_row_reads_masks_ranges_and_weights(tmp_path):
    a, b = _run_workers(tmp_path)
    steps = LOGS // BATCH
    for out in (a, b):
        assert out["replicas"] == 2  # one cluster of two workers, not two single ones
        assert out["iterations"] == steps
        assert {"PruneRows", "RowwiseQuantize", "PruneLowMagnitude",
                "QuantizeWrapper"} <= set(out["wrappers"])
    # the workers trained on different halves of the logs, together all of them
    features, _ = examples.click_logs(n=LOGS, users=USERS, items=ITEMS, seed=0)
    assert len(a["users"]) == len(b["users"]) == LOGS // 2 and a["users"] != b["users"]
    assert sorted(a["users"] + b["users"]) == sorted(features["user"].tolist())

    va, vb = a["variables"], b["variables"]
    assert sorted(va) == sorted(vb)
    reads = [path for path in va if path.endswith("/reads")]
    assert len(reads) == 1
    for out in (a, b):  # every worker's ids counted: the global batches', all the logs once
        np.testing.assert_array_equal(
            out["variables"][reads[0]], np.bincount(features["user"], minlength=USERS),
            err_msg="row reads are not summed over the workers")
    masks = [path for path in va if path.endswith("mask")]
    ranges = [path for path in va if path.endswith(("_min", "_max"))]
    assert len(masks) >= 2 and len(ranges) >= 12, sorted(va)
    for path in masks:  # bit-identical
        np.testing.assert_array_equal(va[path], vb[path], err_msg=path)
    for path in ranges:
        np.testing.assert_allclose(va[path], vb[path], rtol=0, atol=1e-6, err_msg=path)
    for path in va:  # weights, step counters, everything else
        np.testing.assert_allclose(np.asarray(va[path], "float64"),
                                   np.asarray(vb[path], "float64"), rtol=0, atol=1e-6,
                                   err_msg=path)

    (row_mask,) = [va[p] for p in masks if p.endswith("/row_mask")]
    assert sum(row_mask) == USERS // 2  # half the user rows pruned, the same half on both
    (tower_mask,) = [va[p] for p in masks if p.startswith("prune_low_magnitude_tower/")]
    assert 1 - np.mean(tower_mask) == 0.75  # the schedule's final sparsity, reached at step 12
    assert {va[p] for p in va if p.endswith("pruning_step")} == {steps}

    assert sorted(f.name for f in tmp_path.glob("*.keras")) == ["worker0.keras"]
    import keras

    saved = keras.saving.load_model(tmp_path / "worker0.keras")
    (rows,) = [w for w in saved.layers if type(w).__name__ == "QuantizeWrapper"
               and type(w.layer).__name__ == "PruneRows"]
    np.testing.assert_array_equal(np.asarray(rows.layer.row_mask), row_mask)
