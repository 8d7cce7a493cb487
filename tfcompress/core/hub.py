"""keras-hub's TransformerEncoder with fewer attention heads than `hidden_dim` implies.

keras-hub's `TransformerEncoder` sizes its attention heads as
`hidden_dim // num_heads`, so an encoder whose pruned heads were removed
(`tfcompress.shrink`) cannot be that class with a smaller `num_heads`: each
remaining head would grow. `HeadPrunedTransformerEncoder` is the same layer
with the head size as a config entry (`key_dim`); everything else, its
weights' layout and its call, are keras-hub's.
"""

import keras


def encoder_class():
    """keras-hub's `TransformerEncoder`, or None when keras-hub is not installed."""
    try:
        import keras_hub
    except ImportError:
        return None
    return keras_hub.layers.TransformerEncoder


_CLASS = None


def head_pruned_class():
    """The `HeadPrunedTransformerEncoder` class (made once, when keras-hub is installed).

    Example:

    ```python
    import keras
    from tfcompress.core import hub
    Encoder = hub.head_pruned_class()
    encoder = Encoder(key_dim=8, intermediate_dim=32, num_heads=1)
    y = encoder(keras.ops.ones((2, 5, 16)))   # one head of size 8, not 16
    assert encoder._self_attention_layer._query_dense.kernel.shape == (16, 1, 8)
    ```
    """
    global _CLASS
    base = encoder_class()
    if base is None or _CLASS is not None:
        return _CLASS

    @keras.saving.register_keras_serializable("tfcompress")
    class HeadPrunedTransformerEncoder(base):
        """A keras-hub `TransformerEncoder` whose attention heads have size `key_dim`."""

        def __init__(self, key_dim, **kwargs):
            self._head_size = int(key_dim)
            super().__init__(**kwargs)

        def __setattr__(self, name, value):
            # keras-hub's build makes its attention with key_dim = hidden // heads:
            # the same attention, with our head size, is kept instead.
            if (name == "_self_attention_layer"
                    and isinstance(value, keras.layers.MultiHeadAttention)
                    and getattr(self, "_head_size", None) is not None
                    and value._key_dim != self._head_size):
                value = type(value).from_config({**value.get_config(), "key_dim": self._head_size,
                                                 "value_dim": self._head_size})
            super().__setattr__(name, value)

        def get_config(self):
            return {**super().get_config(), "key_dim": self._head_size}

    _CLASS = HeadPrunedTransformerEncoder
    return _CLASS


def rebuild(op, config):
    """`(class, config)` to rebuild `op` with `config`: a keras-hub encoder that loses heads
    becomes a `HeadPrunedTransformerEncoder` keeping its head size."""
    base = encoder_class()
    if base is None or not isinstance(op, base) or config.get("num_heads") == op.num_heads:
        return type(op), config
    return head_pruned_class(), {**config, "key_dim": op._self_attention_layer._key_dim}
