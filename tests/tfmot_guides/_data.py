"""Offline stand-ins for the datasets TFMOT's guides download.

scikit-learn's `load_digits` (1,797 8x8 images, 0..16) upsampled to MNIST's
28x28 grayscale uint8 layout, or to CIFAR-10's 32x32x3. The last 297 digits
are the test set; the training set is the other 1,500, plus shifted copies of
them when a guide asks for more (its schedule needs enough steps to prune).
"""

import types

import numpy as np

NUM_TEST = 297
_SHIFTS = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]


def _digits(scale, num_train):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.kron(images, np.ones((1, scale, scale), np.uint8))
    labels = digits.target.astype(np.uint8)
    test = images[-NUM_TEST:], labels[-NUM_TEST:]
    train_images, train_labels = images[:-NUM_TEST], labels[:-NUM_TEST]
    copies = -(-num_train // len(train_images))
    if copies > len(_SHIFTS):
        raise ValueError(f"num_train must be <= {len(_SHIFTS) * len(train_images)}.")
    train_images = np.concatenate([np.roll(train_images, shift, axis=(1, 2))
                                   for shift in _SHIFTS[:copies]])[:num_train]
    train_labels = np.tile(train_labels, copies)[:num_train]
    return (train_images, train_labels), test


def mnist_load_data(num_train=1500):
    """Like `keras.datasets.mnist.load_data()`: uint8 (n, 28, 28) images, uint8 labels."""
    (x, y), (x_test, y_test) = _digits(3, num_train)  # 24x24, padded to 28x28 below
    pad = ((0, 0), (2, 2), (2, 2))
    return (np.pad(x, pad), y), (np.pad(x_test, pad), y_test)


def cifar10_load(num_train=1500):
    """Like `tfds.load('cifar10', split=['train[:90%]', 'train[90%:]', 'test'],
    as_supervised=True, with_info=True)`: datasets of (uint8 32x32x3 image, int64 label)."""
    import tensorflow as tf

    (x, y), (x_test, y_test) = _digits(4, num_train)
    x, x_test = (np.repeat(a[..., None], 3, axis=-1) for a in (x, x_test))
    n_train = int(len(x) * 0.9)
    parts = [(x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), (x_test, y_test)]
    datasets = tuple(tf.data.Dataset.from_tensor_slices((a, b.astype(np.int64)))
                     for a, b in parts)
    info = types.SimpleNamespace(splits={
        "train": types.SimpleNamespace(num_examples=len(x)),
        "test": types.SimpleNamespace(num_examples=len(x_test))})
    return datasets, info
