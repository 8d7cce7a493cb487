"""What the TFMOT side-by-side benchmarks share (bench_pruning.py, bench_qat.py).

Each benchmark runs every framework in its own interpreter (importing TFMOT
switches the whole process to tf_keras), so everything here takes the
worker's `tf` / `keras` modules as arguments and works with Keras 3 and
tf_keras alike.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 32
_START = time.perf_counter()


def log(name, message):
    """Progress on stderr (stdout is kept for the report)."""
    print(f"[{name} {time.perf_counter() - _START:6.1f}s] {message}", file=sys.stderr,
          flush=True)


def train_dataset(tf, x, y, epochs, seed):
    """Batches in a fixed order, identical in both frameworks.

    Epoch `e` visits the examples in the `e`-th permutation drawn by a numpy
    generator seeded with `seed`; the last batch of an epoch may be short. The
    dataset repeats, so `fit` must be given `steps_per_epoch`: both Keras 3 and
    tf_keras then keep one iterator across epochs (a seeded `shuffle` would
    not do: the two frameworks create iterators a different number of times).
    """
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(len(x)) for _ in range(epochs)])
    x, y = tf.constant(x), tf.constant(y)
    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(BATCH_SIZE))
        .map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)))
        .repeat()
        .prefetch(2)
    )


def steps_per_epoch(n_train):
    """Batches per epoch, the last one short."""
    return math.ceil(n_train / BATCH_SIZE)


def top1_accuracy(model, x, y):
    """Top-1 accuracy of a logits model."""
    logits = np.asarray(model(x, training=False))  # eager: no predict() tracing
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def epoch_timer(keras):
    """A callback recording each epoch's wall and process CPU time (put it last).

    CPU time (all threads of this process) is less sensitive than wall time
    to other processes competing for the cores.
    """

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = {"wall": [], "cpu": []}
            self._start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.times["wall"].append(time.perf_counter() - self._start[0])
            self.times["cpu"].append(time.process_time() - self._start[1])

    return EpochTimer()


def save_inputs(inputs_dir, weights, **arrays):
    """Data and initial weights for the workers, in `<inputs_dir>/inputs.npz`."""
    np.savez(Path(inputs_dir) / "inputs.npz", n_weights=len(weights), **arrays,
             **{f"w{i}": w for i, w in enumerate(weights)})


def load_inputs(inputs_dir, *names):
    """The arrays `names` and the weight list saved by `save_inputs`."""
    with np.load(Path(inputs_dir) / "inputs.npz") as npz:
        return [npz[k] for k in names], [npz[f"w{i}"] for i in range(int(npz["n_weights"]))]


def run_worker_process(script, name, inputs_dir, *args):
    """Runs `script --worker NAME --inputs DIR *args` in a fresh interpreter; returns its JSON."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", name,
           "--inputs", str(inputs_dir), *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    env.pop("TF_USE_LEGACY_KERAS", None)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    log(name, f"worker finished in {time.perf_counter() - start:.1f} s")
    return json.loads((Path(inputs_dir) / f"{name}.json").read_text())
