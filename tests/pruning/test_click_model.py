"""An embedding-heavy click-through model (synthetic logs, latent factors) is pruned too."""

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import examples


def test_click_model_prunes_embeddings_and_keeps_auc():
    # 48k training logs: enough for the dense model to learn the latent factors
    # (test AUC ~0.75; the generator's own logits give 0.89), so a pruning loss shows.
    features, clicks = examples.click_logs(n=60000)
    train = {k: v[:48000] for k, v in features.items()}
    test = {k: v[48000:] for k, v in features.items()}
    keras.utils.set_random_seed(0)
    dense = examples.click_model()
    dense.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    dense.fit(train, clicks[:48000], batch_size=256, epochs=4, verbose=0)
    dense_auc = dense.evaluate(test, clicks[48000:], verbose=0, return_dict=True)["auc"]

    schedule = tfc.pruning.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=500, frequency=50)
    pruned = tfc.pruning.prune_low_magnitude(dense, pruning_schedule=schedule)
    pruned.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy",
                   metrics=[keras.metrics.AUC(name="auc")])
    pruned.fit(train, clicks[:48000], batch_size=256, epochs=4, verbose=0,
               callbacks=[tfc.pruning.UpdatePruningStep()])  # 752 steps
    stripped = tfc.pruning.strip_pruning(pruned)
    stripped.compile(metrics=[keras.metrics.AUC(name="auc")], loss="binary_crossentropy")
    pruned_auc = stripped.evaluate(test, clicks[48000:], verbose=0, return_dict=True)["auc"]

    for name in ("user_embedding", "item_embedding"):
        table = np.asarray(stripped.get_layer(name).embeddings)
        assert abs(np.mean(table == 0) - 0.7) < 0.01
    assert dense_auc > 0.74
    assert pruned_auc > dense_auc - 0.03, (dense_auc, pruned_auc)
