import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def digits():
    from tfcompress import examples

    return examples.digits()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def cnn(digits):
    """The digits CNN trained 3 epochs (export tests)."""
    from tfcompress import examples

    (x, y), _, _ = digits
    keras.utils.set_random_seed(0)
    model = examples.digits_cnn()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def click():
    """The click-through model trained 2 epochs on 6,000 synthetic logs (export tests)."""
    from tfcompress import examples

    features, clicks = examples.click_logs(n=6000)
    keras.utils.set_random_seed(0)
    model = examples.click_model()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(features, clicks, batch_size=128, epochs=2, verbose=0)
    return model, features, clicks
