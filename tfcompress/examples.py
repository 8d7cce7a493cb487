"""Small real and synthetic tasks shared by the demo, tests and benchmarks.

- `digits()`: scikit-learn's 1,797 real 8x8 handwritten digits (shipped with
  scikit-learn, no download), split 70/15/15 with a fixed seed.
- `click_logs()`: synthetic click-through logs from a stated generative
  model: users and items have latent factors `u ~ N(0, I/√d)`,
  `v ~ N(0, I/√d)` and a per-item bias; a context feature (one of 8) adds a
  shift; `P(click) = sigmoid(strength·u·v + b_item + c_context - 1)` (strength 6:
  a Bayes-optimal AUC of 0.88 at the defaults).
- `zipf_click_logs()` and `recommender()`: click logs whose user and item ids
  follow truncated Zipf laws (a few ids are most of the traffic, most rows
  are rarely read), and the three recommender architectures of the
  embedding benchmark and notebook 08 built on them: a keras-rs DCN-v2, a
  keras-rs DLRM and a two-tower model.
- `dcn_v2()`, `dlrm()`, `bert_classifier()`: real third-party models built
  from composite layers (keras-rs `FeatureCross`, `DotInteraction`; keras-hub
  `BertBackbone`, from a small config with random weights, no download), each
  with a small synthetic labelled batch (stated in its docstring). They need
  the test extra (`pip install tfcompress[test]`).
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


def digits_tokens(seed=0):
    """scikit-learn's digits as token sequences: `(x, y)` for train, validation and test.

    Each 8x8 image is 64 tokens (row by row), its 16ths of intensity as a
    vocabulary of 17 levels. `x` is `{"token_ids", "padding_mask"}` (int32,
    shape `(n, 64)`; every token is real, so the mask is all ones). The split
    is `digits(seed)`'s.

    Example:

    ```python
    from tfcompress import examples
    (x, y), _, (x_test, y_test) = examples.digits_tokens()
    assert x["token_ids"].shape[1] == 64 and x["token_ids"].max() <= 16
    ```
    """
    out = []
    for images, labels in digits(seed):
        tokens = np.rint(images.reshape(len(images), 64) * 16).astype("int32")
        out.append(({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}, labels))
    return tuple(out)


def digits_encoder(num_layers=2, hidden_dim=64, num_heads=2, intermediate_dim=128,
                   dropout=0.1, name="digits_encoder"):
    """A BERT-style encoder classifier for `digits_tokens`, from keras-hub's layers.

    Token and position embeddings, LayerNorm, `num_layers` keras-hub
    `TransformerEncoder`s (post-norm, GELU, named `encoder_<i>`, masked by
    `padding_mask`), the first token through a tanh `pooled` Dense, and 10
    logits. One flat functional graph, so distillation can read each
    encoder's hidden states by name.

    Example:

    ```python
    from tfcompress import examples
    model = examples.digits_encoder(num_layers=1, hidden_dim=16, intermediate_dim=32)
    ```
    """
    import keras_hub

    L = keras.layers
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=17, sequence_length=64, embedding_dim=hidden_dim, name="embeddings")(tokens)
    x = L.LayerNormalization(epsilon=1e-12, name="embeddings_norm")(x)
    x = L.Dropout(dropout, name="embeddings_dropout")(x)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim, num_heads, dropout=dropout, activation="gelu",
            layer_norm_epsilon=1e-12, name=f"encoder_{i}")(x, padding_mask=mask)
    pooled = L.Dense(hidden_dim, activation="tanh", name="pooled")(x[:, 0, :])
    logits = L.Dense(10, name="logits")(L.Dropout(dropout, name="pooled_dropout")(pooled))
    return keras.Model({"token_ids": tokens, "padding_mask": mask}, logits, name=name)


def transformer_block(width=32, heads=2, rows=8, features=8, classes=10):
    """A plain-Keras transformer block classifier over `rows` tokens of `features` values.

    Dense embedding, `MultiHeadAttention`, residual `Add`, `LayerNormalization`,
    a GELU feed-forward with its residual and LayerNorm, average pooling and
    Dense logits. For digits as 8 rows of 8 features: `digits()` reshaped.

    Example:

    ```python
    from tfcompress import examples
    model = examples.transformer_block()
    ```
    """
    L = keras.layers
    inputs = keras.Input((rows, features), name="rows")
    x = L.Dense(width, name="embed")(inputs)
    attended = L.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = L.LayerNormalization(name="norm_1")(L.Add(name="residual_1")([x, attended]))
    hidden = L.Dense(2 * width, activation="gelu", name="ffn_1")(x)
    x = L.Add(name="residual_2")([x, L.Dense(width, name="ffn_2")(hidden)])
    x = L.LayerNormalization(name="norm_2")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, L.Dense(classes, name="logits")(x), name="transformer_block")


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


def dcn_v2(projection_dim=None, n=64, seed=0):
    """A keras-rs DCN-v2 (two `FeatureCross` layers, a sigmoid head) and `(x, y)`.

    Features are `N(0, 1)` in 12 dimensions; the label is 1 when the first
    two features have the same sign (a pure feature cross).

    Example:

    ```python
    from tfcompress import examples
    model, x, y = examples.dcn_v2(projection_dim=4)
    ```
    """
    import keras_rs

    x = keras.Input((12,), name="features")
    crossed = keras_rs.layers.FeatureCross(projection_dim=projection_dim)(x, x)
    crossed = keras_rs.layers.FeatureCross(projection_dim=projection_dim)(x, crossed)
    out = keras.layers.Dense(1, activation="sigmoid", name="click")(crossed)
    model = keras.Model(x, out, name=f"dcn_v2_{projection_dim}")
    features = np.random.default_rng(seed).normal(size=(n, 12)).astype("float32")
    return model, features, (features[:, 0] * features[:, 1] > 0).astype("float32")


def dlrm(n=64, seed=0):
    """A keras-rs DLRM (bottom MLP, three tables, `DotInteraction`, top MLP) and `(x, y)`.

    Dense features `N(0, 1)`, ids uniform over 50 rows per table, labels
    uniform 0/1 (noise: a shape and plumbing check, not a task).

    Example:

    ```python
    from tfcompress import examples
    model, x, y = examples.dlrm()
    ```
    """
    import keras_rs

    dense = keras.Input((4,), name="dense")
    ids = [keras.Input((), dtype="int32", name=f"cat{i}") for i in range(3)]
    bottom = keras.layers.Dense(16, name="bottom_0")(dense)
    bottom = keras.layers.Dense(8, activation="relu", name="bottom_1")(bottom)
    tables = [keras.layers.Embedding(50, 8, name=f"table{i}")(t) for i, t in enumerate(ids)]
    interactions = keras_rs.layers.DotInteraction(name="interaction")([bottom] + tables)
    top = keras.layers.Dense(16, activation="relu", name="top")(
        keras.layers.Concatenate(name="concat")([bottom, interactions]))
    model = keras.Model([dense] + ids, keras.layers.Dense(1, activation="sigmoid",
                                                          name="click")(top), name="dlrm")
    rng = np.random.default_rng(seed)
    x = {"dense": rng.normal(size=(n, 4)).astype("float32"),
         **{f"cat{i}": rng.integers(0, 50, n).astype("int32") for i in range(3)}}
    return model, x, rng.integers(0, 2, n).astype("float32")


def bert_classifier(n=64, seed=0):
    """A keras-hub `BertTextClassifier` (2 layers, hidden 16, 8 tokens, 3 classes) and `(x, y)`.

    Random weights from a small config (no preset download); token ids
    uniform over a vocabulary of 100, labels uniform over 3 classes.

    Example:

    ```python
    from tfcompress import examples
    model, x, y = examples.bert_classifier()
    ```
    """
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3,
                                                preprocessor=None)
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(0, 100, (n, 8)).astype("int32"),
         "segment_ids": np.zeros((n, 8), "int32"), "padding_mask": np.ones((n, 8), "int32")}
    return model, x, rng.integers(0, 3, n)


def zipf_click_logs(n, users=50_000, items=5_000, alpha_users=1.1, alpha_items=1.2,
                    factors=8, strength=6.0, seed=0):
    """Click logs with Zipf-distributed ids, from a stated generative model.

    The world is fixed (seed 0): users and items have latent factors
    `N(0, I/sqrt(factors))`, items a bias `N(0, 0.5)`. `seed` draws the logs:
    user ids from a Zipf law truncated to `users` (`P(id) ~ 1/(id+1)^alpha_users`),
    item ids likewise, an hour of day uniform over 24 (noise), and
    `P(click) = sigmoid(strength * u.v + b_item - 1)`. Draw training and test
    logs with different seeds.

    Returns `(features, clicks)`: a dict of int32 arrays `user`, `item`,
    `hour` of shape (n,), and float32 clicks in {0, 1}.

    Example:

    ```python
    from tfcompress import examples
    x, y = examples.zipf_click_logs(10_000, users=2_000, items=500, seed=1)
    ```
    """
    world = np.random.default_rng(0)
    u = world.normal(0, 1 / np.sqrt(factors), (users, factors))
    v = world.normal(0, 1 / np.sqrt(factors), (items, factors))
    bias = world.normal(0, 0.5, items)
    draw = np.random.default_rng(seed)

    def zipf(count, alpha):
        p = 1.0 / np.arange(1, count + 1) ** alpha
        return draw.choice(count, size=n, p=p / p.sum()).astype("int32")

    user, item = zipf(users, alpha_users), zipf(items, alpha_items)
    logit = strength * np.sum(u[user] * v[item], axis=1) + bias[item] - 1.0
    clicks = (draw.random(n) < 1 / (1 + np.exp(-logit))).astype("float32")
    hour = draw.integers(0, 24, n).astype("int32")
    return {"user": user, "item": item, "hour": hour}, clicks


def recommender(kind="dcn", users=50_000, items=5_000, dim=32):
    """A recommender over `zipf_click_logs` features: `"dcn"`, `"dlrm"` or `"two_tower"`.

    Every kind has a `user_table` (users x dim) and an `item_table`
    (items x dim) and ends in a sigmoid `click`:
    - `"dcn"`: keras-rs DCN-v2, the two vectors concatenated, two
      `FeatureCross` layers (projection 16), Dense 64;
    - `"dlrm"`: keras-rs `DotInteraction` of the user, item and an
      `hour_table` (24 x dim) vector, with the hour vector, into Dense 64;
    - `"two_tower"`: a user tower and an item tower (Dense 64 relu, Dense
      dim) scored by their dot product, plus an item bias.
    Inputs are named after the features they read (`hour` for `"dlrm"` only).

    Example:

    ```python
    from tfcompress import examples
    model = examples.recommender("dcn", users=2_000, items=500)
    ```
    """
    if kind not in ("dcn", "dlrm", "two_tower"):
        raise ValueError(f"kind={kind!r}: use 'dcn', 'dlrm' or 'two_tower'.")
    import keras_rs

    L = keras.layers
    names = ("user", "item", "hour") if kind == "dlrm" else ("user", "item")
    inputs = {key: keras.Input((), dtype="int32", name=key) for key in names}
    user = L.Embedding(users, dim, name="user_table")(inputs["user"])
    item = L.Embedding(items, dim, name="item_table")(inputs["item"])
    if kind == "dcn":
        x0 = L.Concatenate()([user, item])
        x = keras_rs.layers.FeatureCross(projection_dim=16)(x0, x0)
        x = keras_rs.layers.FeatureCross(projection_dim=16)(x0, x)
        x = L.Dense(64, activation="relu")(x)
    elif kind == "dlrm":
        hour = L.Embedding(24, dim, name="hour_table")(inputs["hour"])
        pairs = keras_rs.layers.DotInteraction()([user, item, hour])
        x = L.Dense(64, activation="relu")(L.Concatenate()([pairs, hour]))
    else:  # two towers
        user_tower = L.Dense(dim, name="user_tower")(L.Dense(64, activation="relu")(user))
        item_tower = L.Dense(dim, name="item_tower")(L.Dense(64, activation="relu")(item))
        x = L.Concatenate()([L.Dot(axes=-1)([user_tower, item_tower]), L.Dense(1)(item)])
    return keras.Model(inputs, L.Dense(1, activation="sigmoid", name="click")(x),
                       name=f"{kind}_recommender")
