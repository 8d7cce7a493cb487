"""`to_saved_model`: a compressed Keras 3 model as a SavedModel for TF Serving."""

from tfcompress.export import atomic, finite, signature


def to_saved_model(model, path, overwrite=False):
    """Writes `model` as a SavedModel with a `serving_default` signature; returns the path.

    Pruning wrappers are stripped first. The signature takes one tensor per
    model input, named after it, with a dynamic batch dimension, and returns
    one tensor per output, named after it: what TF Serving, `saved_model_cli
    show --all` and `tf.saved_model.load(path).signatures["serving_default"]`
    expect. Returns the absolute path. The model runs in inference mode (BatchNormalization uses its
    moving statistics, dropout is off).

    The directory is written next to `path` under a temporary name and renamed
    into place, so a failed export leaves nothing at `path`. An existing
    `path` is only replaced with `overwrite=True`. A model whose variables
    hold NaN or Inf is refused (see `finite.check_model`), and nothing is
    written.

    Example:

    ```python
    import tensorflow as tf
    import tfcompress as tfc
    from tfcompress import examples

    model = examples.click_model()
    tfc.export.to_saved_model(model, "/tmp/click_model", overwrite=True)
    serve = tf.saved_model.load("/tmp/click_model").signatures["serving_default"]
    out = serve(user=tf.constant([3]), item=tf.constant([7]), context=tf.constant([1]))
    # {"click": <tf.Tensor shape=(1, 1)>}
    ```
    """
    path = atomic.check_target(path, overwrite, kind="directory")
    model = signature.prepare(model)
    finite.check_model(model, "export")
    with atomic.directory(path, overwrite) as tmp:
        signature.write(model, tmp)
    return path
