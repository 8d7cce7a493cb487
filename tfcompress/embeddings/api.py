"""`compress_embeddings`: the chosen Embedding tables of a model, compressed in place."""

import keras

from tfcompress.core import copy_layer, find, is_graph_model, map_layers
from tfcompress.embeddings.rows_pruning import PruneRows
from tfcompress.embeddings.rowwise import RowwiseQuantize
from tfcompress.embeddings.tables import HashedEmbedding, MixedDimEmbedding, QREmbedding, Table


def _replacement(cls):
    def make(layer, **options):
        return cls(layer.input_dim, layer.output_dim, mask_zero=layer.mask_zero,
                   name=layer.name, **options)
    return make


def _mixed_dim(layer, frequencies=None, **options):
    if isinstance(frequencies, dict):
        frequencies = frequencies.get(layer.name)
    if frequencies is None or len(frequencies) != layer.input_dim:
        raise ValueError(
            f"method='mixed_dim' needs frequencies=: how often each of the {layer.input_dim} "
            f"ids of '{layer.name}' is read (e.g. np.bincount(ids, minlength="
            f"{layer.input_dim})), or a dict of them by layer name; got "
            f"{'none' if frequencies is None else f'{len(frequencies)} counts'}.")
    return MixedDimEmbedding.from_frequencies(frequencies, layer.output_dim,
                                              mask_zero=layer.mask_zero, name=layer.name,
                                              **options)


#: method → `make(plain Embedding layer, **options)`: what wraps or replaces it
METHODS = {
    "rowwise_int8": lambda layer: RowwiseQuantize(layer, bits=8),
    "rowwise_int4": lambda layer: RowwiseQuantize(layer, bits=4),
    "qr": _replacement(QREmbedding),
    "hashed": _replacement(HashedEmbedding),
    "mixed_dim": _mixed_dim,
    "prune_rows": PruneRows,
}


def compress_embeddings(model, method="rowwise_int8", layers=None, min_rows=None, **options):
    """A copy of `model` whose Embedding tables are compressed by `method`.

    Methods: `"rowwise_int8"`, `"rowwise_int4"` (`RowwiseQuantize`:
    quantization-aware, one scale per row, the trained table kept; after
    `tfcompress.strip` the table is stored as int8); `"qr"` (`QREmbedding`,
    options `num_buckets`, `operation`) and `"hashed"` (`HashedEmbedding`,
    options `num_buckets` (required), `num_hashes`, `seed`): smaller tables
    that replace the layer (same name), trained from a fresh initialization;
    `"mixed_dim"` (`MixedDimEmbedding`, options `frequencies` (required:
    reads per id, an array or a dict by layer name), `num_blocks`, `alpha`,
    `min_dim`): frequent ids wide, rare ids narrow;
    `"prune_rows"` (`PruneRows`, option `pruning_schedule`): the least-read
    rows pruned whole during `fit` (train with `UpdatePruningStep()`), the
    table kept to the remaining rows by `tfcompress.strip`.
    Methods compose by calling again: `"rowwise_int8"` / `"rowwise_int4"`
    on a model whose tables are already `qr`, `hashed` or `mixed_dim` store
    those tables' rows as int8 too.
    Train the result with an ordinary `fit` (towers may be pruned or
    quantization-aware beside it), then strip and export it.

    Args:
        model: a Sequential or functional model.
        method: one of `METHODS`.
        layers: names of the Embedding layers to compress; default all that
            have at least `min_rows` rows.
        min_rows: with `layers=None`, only tables this large (default: all).
        **options: the method's options (see above).

    Example:

    ```python
    import tfcompress as tfc
    from tfcompress import examples
    model = tfc.embeddings.compress_embeddings(examples.click_model(), "rowwise_int8",
                                               min_rows=100)
    ```
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}.")
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise ValueError("compress_embeddings takes a Sequential or functional keras Model; got "
                         f"{type(model).__name__}.")
    tables = [layer for layer in find(model, keras.layers.Embedding)
              if type(layer) is keras.layers.Embedding]
    if method.startswith("rowwise"):  # and this folder's float tables
        tables += [layer for layer in find(model, Table) if layer.row_tables()]
    if layers is not None:
        names = [layers] if isinstance(layers, str) else list(layers)
        known = {t.name for t in tables}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"compress_embeddings: no Embedding layer named {unknown}; the "
                             f"model's Embedding layers: {sorted(known)}.")
        chosen = {id(t) for t in tables if t.name in names}
    else:
        chosen = {id(t) for t in tables if min_rows is None or t.input_dim >= min_rows}
    if not chosen:
        raise ValueError(f"compress_embeddings: no table to compress with method={method!r} "
                         f"(min_rows={min_rows}); the model's tables: "
                         f"{sorted((t.name, t.input_dim) for t in tables)}.")
    make = METHODS[method]
    if method.startswith("rowwise") and options:
        raise ValueError(f"method={method!r} takes no options; got {sorted(options)}.")
    return map_layers(model, lambda layer: make(copy_layer(layer), **options)
                      if id(layer) in chosen else copy_layer(layer))
