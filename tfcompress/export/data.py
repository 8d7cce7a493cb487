"""Sample data for calibration and verification, checked against the model's inputs.

`features(data, inputs)` accepts what `model.fit` accepts for `x` and turns it
into `{input name: numpy array}`:

- a numpy array (single-input models);
- a list of arrays (one per input) or a dict `{input name: array}`;
- a `tf.data.Dataset` of such elements, batched or not, optionally with labels
  (`(features, labels)`), which is read lazily: only `max_samples` samples are
  taken from it.

Shapes and dtypes are checked against each input before anything is
converted, and an error names the input that does not match.
"""

import numpy as np
import tensorflow as tf

KINDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean"}


def features(data, inputs, role="data", max_samples=None, with_labels=False):
    """`{input name: array}` (and the labels when `with_labels`) from `data`.

    Args:
        data: array, list or dict of arrays, `(x, y)` tuple, or `tf.data.Dataset`.
        inputs: the model's inputs, from `signature.inputs(model)`.
        role: the argument name used in error messages.
        max_samples: take at most this many samples (None: all).
        with_labels: also return the labels of `(x, y)` data (or None).

    Example:

    ```python
    import numpy as np
    from tfcompress import examples
    from tfcompress.export import data, signature
    inputs = signature.inputs(examples.digits_cnn())
    arrays = data.features(np.zeros((5, 8, 8, 1), "float32"), inputs)
    ```
    """
    labels = None
    if isinstance(data, tf.data.Dataset):
        arrays, labels = _from_dataset(data, inputs, role, max_samples)
    else:
        data, labels = _split_labels(data, inputs)
        arrays = _to_dict(data, inputs, role)
        arrays = {info.name: _check(arrays[info.name], info, role) for info in inputs}
        counts = {name: len(a) for name, a in arrays.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"{role} has different numbers of samples per input: {counts}. "
                "Give every input the same number of rows."
            )
        if max_samples is not None:
            arrays = {name: a[:max_samples] for name, a in arrays.items()}
            labels = _labels(labels, max_samples)
    arrays = {info.name: arrays[info.name].astype(info.dtype, copy=False) for info in inputs}
    if not len(next(iter(arrays.values()))):
        raise ValueError(f"{role} is empty; give at least one sample.")
    if with_labels:
        return arrays, _labels(labels, None)
    return arrays


def _labels(labels, max_samples):
    """Labels as arrays: one array, a dict `{output name: array}`, or a list in output order."""
    if labels is None:
        return None
    if isinstance(labels, dict):
        return {name: np.asarray(v)[:max_samples] for name, v in labels.items()}
    if isinstance(labels, (list, tuple)) and labels and np.ndim(labels[0]) >= 1:
        return [np.asarray(v)[:max_samples] for v in labels]
    return np.asarray(labels)[:max_samples]


def samples(arrays):
    """Yields one sample at a time as `{input name: array with batch 1}`.

    Example:

    ```python
    import numpy as np
    from tfcompress.export import data
    batches = list(data.samples({"x": np.zeros((3, 4), "float32")}))  # 3 batches of 1
    ```
    """
    count = len(next(iter(arrays.values())))
    for i in range(count):
        yield {name: a[i:i + 1] for name, a in arrays.items()}


def _split_labels(data, inputs):
    if isinstance(data, tuple) and len(data) in (2, 3):
        first = data[0]
        if len(inputs) == 1 or isinstance(first, (dict, list, tuple)):
            return first, data[1]
    return data, None


def _to_dict(data, inputs, role):
    names = [info.name for info in inputs]
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        extra = [str(k) for k in data if k not in names]
        if missing or extra:
            raise ValueError(
                f"{role} must have one entry per model input {names}; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {extra}" if extra else "")
                + ". Key the dict by the names given to `keras.Input(name=...)`."
            )
        return {n: data[n] for n in names}
    if isinstance(data, (list, tuple)) and len(inputs) > 1:
        if len(data) != len(inputs):
            raise ValueError(
                f"{role} has {len(data)} arrays but the model has {len(inputs)} "
                f"inputs {names}; pass a dict {{name: array}} with one entry each."
            )
        return dict(zip(names, data))
    if len(inputs) > 1:
        raise ValueError(
            f"{role} is a single array but the model has {len(inputs)} inputs "
            f"{names}; pass a dict {{name: array}} with one entry per input."
        )
    return {names[0]: data}


def _check(array, info, role):
    array = np.asarray(array)
    want = np.dtype(info.dtype)
    if array.dtype.kind not in KINDS or KINDS[array.dtype.kind] != KINDS.get(want.kind):
        fix = f".astype('{info.dtype}')"
        if want.kind == "f" and array.dtype.kind in "iu":
            fix += " (scaled as in training)"
        raise ValueError(
            f"{role} for input '{info.name}' has dtype {array.dtype} but the "
            f"model input is {info.dtype}: convert it with {fix}."
        )
    expected = info.shape
    if array.ndim != len(expected) or any(
        e is not None and e != s for e, s in zip(expected[1:], array.shape[1:])
    ):
        shown = "(num_samples, " + ", ".join(
            "any" if d is None else str(d) for d in expected[1:]) + ")"
        raise ValueError(
            f"{role} for input '{info.name}' has shape {array.shape} but the "
            f"model expects {shown}. Give a batch of samples shaped like the "
            "training data for that input."
        )
    return array


def _from_dataset(dataset, inputs, role, max_samples):
    spec = dataset.element_spec
    with_labels = False
    if isinstance(spec, tuple) and len(spec) in (2, 3) and not (
        len(inputs) > 1 and len(spec) == len(inputs) and not isinstance(spec[0], (dict, tuple))
    ):
        with_labels, spec = True, spec[0]
    tensor_specs = _to_dict(spec, inputs, role)
    batched = None
    for info in inputs:
        ts = tensor_specs[info.name]
        rank = len(ts.shape) if ts.shape.rank is not None else None
        for_this = {len(info.shape): True, len(info.shape) - 1: False}.get(rank)
        if for_this is None or (batched is not None and for_this != batched):
            raise ValueError(
                f"{role} (a tf.data.Dataset) gives input '{info.name}' elements "
                f"of shape {ts.shape}, which fits neither a batch nor a single "
                f"sample of the model input {info.shape}."
            )
        batched = for_this
        sample_shape = ts.shape[1:] if batched else ts.shape
        _check(np.zeros([1] + [d or 1 for d in sample_shape], ts.dtype.as_numpy_dtype), info, role)
    if with_labels:
        dataset = dataset.map(lambda *element: element[:2])
    else:
        dataset = dataset.map(lambda *element: element[0] if len(element) == 1 else element)
    if batched:
        dataset = dataset.unbatch()
    if max_samples is not None:
        dataset = dataset.take(max_samples)
    elif dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"{role} is an infinite tf.data.Dataset; take a finite part of it, "
            "e.g. `dataset.take(1000)`."
        )
    xs, ys = [], []
    for element in dataset.batch(256).as_numpy_iterator():
        x, y = element if with_labels else (element, None)
        xs.append(_to_dict(x, inputs, role))
        ys.append(y)
    if not xs:
        raise ValueError(f"{role} (a tf.data.Dataset) gave no samples.")
    arrays = {info.name: _check(np.concatenate([x[info.name] for x in xs]), info, role)
              for info in inputs}
    labels = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *ys) \
        if with_labels else None
    if isinstance(labels, tuple):
        labels = list(labels)
    return arrays, labels
