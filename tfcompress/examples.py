"""Small real and synthetic tasks shared by the demo, tests and benchmarks.

- `digits()`: scikit-learn's 1,797 real 8x8 handwritten digits (shipped with
  scikit-learn, no download), split 70/15/15 with a fixed seed.
- `click_logs()`: synthetic click-through logs from a stated generative
  model: users and items have latent factors `u ~ N(0, I/√d)`,
  `v ~ N(0, I/√d)` and a per-item bias; a context feature (one of 8) adds a
  shift; `P(click) = sigmoid(strength·u·v + b_item + c_context - 1)` (strength 6:
  a Bayes-optimal AUC of 0.88 at the defaults).
"""

import keras
import numpy as np


def digits(seed=0):
    """Returns `(x_train, y_train), (x_val, y_val), (x_test, y_test)`, x in [0, 1], shape (n, 8, 8, 1).

    Example:

    ```python
    from tfcompress import examples
    (x, y), _, (x_test, y_test) = examples.digits()
    ```
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def digits_cnn(width=16):
    """A small functional CNN for 8x8x1 digits: Conv-BN-ReLU, DW, 1x1 Conv, pooling, Dense.

    Example:

    ```python
    from tfcompress import examples
    model = examples.digits_cnn()
    ```
    """
    L = keras.layers
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D()(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(2 * width, 1, activation="relu")(x)
    x = L.Flatten()(x)
    x = L.Dense(64, activation="relu")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def click_logs(n=20000, users=200, items=100, contexts=8, dim=8, strength=6.0, seed=0):
    """Synthetic click logs (see module docstring for the generative model).

    Returns `(features, clicks)`: a dict of int32 arrays `user`, `item`,
    `context` of shape (n,), and float32 clicks in {0, 1}.

    Example:

    ```python
    from tfcompress import examples
    features, clicks = examples.click_logs(n=1000)
    ```
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1 / np.sqrt(dim), (users, dim))
    v = rng.normal(0, 1 / np.sqrt(dim), (items, dim))
    item_bias = rng.normal(0, 0.5, items)
    context_shift = rng.normal(0, 0.5, contexts)
    user = rng.integers(0, users, n)
    item = rng.integers(0, items, n)
    context = rng.integers(0, contexts, n)
    logit = strength * np.sum(u[user] * v[item], axis=1) + item_bias[item] + context_shift[context] - 1.0
    clicks = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("float32")
    features = {"user": user.astype("int32"), "item": item.astype("int32"),
                "context": context.astype("int32")}
    return features, clicks


def click_model(users=200, items=100, contexts=8, dim=16):
    """An embedding-heavy click-through model: one Embedding per feature, a Dense
    tower, plus a learned user·item product term (a factorization machine).

    Example:

    ```python
    from tfcompress import examples
    model = examples.click_model()
    ```
    """
    L = keras.layers
    inputs = {name: keras.Input((), dtype="int32", name=name)
              for name in ("user", "item", "context")}
    user = L.Embedding(users, dim, name="user_embedding")(inputs["user"])
    item = L.Embedding(items, dim, name="item_embedding")(inputs["item"])
    context = L.Embedding(contexts, 4, name="context_embedding")(inputs["context"])
    # the factorization-machine term: a learned weighting of user * item
    interaction = L.Dense(1, use_bias=False, name="interaction")(L.Multiply()([user, item]))
    x = L.Concatenate()([user, item, context])
    x = L.Dense(64, activation="relu")(x)
    x = L.Dense(32, activation="relu")(x)
    logit = L.Add()([L.Dense(1)(x), interaction])
    outputs = L.Activation("sigmoid", name="click")(logit)
    return keras.Model(inputs, outputs, name="click_model")
