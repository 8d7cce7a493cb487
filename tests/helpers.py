"""Small shared helpers for the tests (no mocks: real Keras models)."""

import keras
import numpy as np

import tfcompress as tfc


def expected_sparsity(schedule, step):
    """Sparsity the masks must have after `step` steps: the schedule's value at
    the last update step <= step (0.0 before the first update)."""
    for s in range(step, 0, -1):
        should, sparsity = schedule(s)
        if bool(should):
            return float(sparsity)
    return 0.0


def expected_zeros(size, sparsity):
    keep = max(int(np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))), 1)
    return size - keep


def mask_zeros(model):
    """{mask path: number of zeros} for every pruning mask in `model`."""
    out = {}
    for wrapper in tfc.core.steps.find(model, tfc.pruning.PruneLowMagnitude):
        for mask in wrapper.masks:
            value = np.asarray(mask)
            out[mask.path] = int(value.size - value.sum())
    return out


def mlp(inputs=16, hidden=32, outputs=4):
    return keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(outputs),
    ])


def regression_data(n=256, inputs=16, outputs=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    w = rng.normal(size=(inputs, outputs)).astype("float32")
    return x, x @ w


class Recorder(keras.callbacks.Callback):
    """Records (optimizer step, zeros per mask) at every batch end."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(np.asarray(self.model.optimizer.iterations))
        self.records.append((step, mask_zeros(self.model)))
