"""`verify`: run an exported artifact beside its Keras model and report how it behaves.

A `.tflite` flatbuffer runs in the LiteRT interpreter (`ai_edge_litert`, not
the deprecated `tf.lite.Interpreter`); a SavedModel directory runs through
its `serving_default` signature. Both are compared output by output with the
Keras model on the same data.
"""

import dataclasses
import gzip
import io
import os
import tarfile
import time

import numpy as np
import tensorflow as tf

from tfcompress.export import census, finite, signature
from tfcompress.export import data as data_lib
from tfcompress.export.artifact import open_artifact
from tfcompress.export.metrics import choose, compiled_metric, labels_for, scorer

_BATCH = 256
_KIND_TITLES = {
    "int8": "ops on int8", "int16": "ops on int16 (int8 weights)",
    "hybrid": "ops on float (int8 weights)", "float": "ops on float",
    "convert": "quantize / dequantize", "int": "index and shape ops",
}


@dataclasses.dataclass
class VerifyReport:
    """What `verify` measured. `str(report)` renders it as a markdown table.

    Attributes:
        artifact: the file or directory checked (`"<flatbuffer>"` for bytes).
        format: `"tflite"` or `"saved_model"`.
        samples: how many samples were compared.
        max_abs_diff: the largest |artifact - Keras| over all outputs.
        agreement: the fraction of samples whose decision agrees with Keras,
            worst over the outputs.
        agreement_kind: how a decision is read: `"top-1"` (argmax, several
            classes), `"threshold 0.5"` (one probability, e.g. sigmoid) or
            `"sign"` (one logit).
        outputs: the same two numbers per output name.
        metric, keras_score, artifact_score: when `data` is `(x, y)`, the
            metric (the model's compiled one, else accuracy / AUC / MSE as
            its first output fits, see `tfcompress.export.metrics`) and its
            value for Keras and for the artifact; else None.
        keras_accuracy, artifact_accuracy: the same values when the metric
            is accuracy, else None.
        bytes, gzip_bytes: artifact size, raw and gzip-compressed.
        latency_ms: median time of one batch-1 inference (LiteRT `invoke`, one
            thread; for a SavedModel, a `serving_default` call).
        runtime: what ran the artifact.
        ops: the op/dtype census (`census.OpInfo` list; empty for a SavedModel).
        weights: `{dtype: stored weight values}` (TFLite only).
        sparse_tensors: weights stored in a sparse encoding (TFLite only).
        notes: anything that ran differently than a default deployment would.

    Example:

    ```python
    import tfcompress as tfc
    from tfcompress import examples
    (x, y), _, (xt, yt) = examples.digits()
    model = examples.digits_cnn()
    flat = tfc.export.to_tflite(model)
    report = tfc.export.verify(flat, model, (xt, yt))
    print(report)
    print(report.int8_ops, report.float_ops)
    ```
    """

    artifact: str
    format: str
    samples: int
    max_abs_diff: float
    agreement: float
    agreement_kind: str
    outputs: dict
    keras_accuracy: float = None
    artifact_accuracy: float = None
    metric: str = None
    keras_score: float = None
    artifact_score: float = None
    bytes: int = 0
    gzip_bytes: int = 0
    latency_ms: float = None
    runtime: str = ""
    ops: list = dataclasses.field(default_factory=list)
    weights: dict = dataclasses.field(default_factory=dict)
    sparse_tensors: int = 0
    notes: list = dataclasses.field(default_factory=list)

    def ops_of_kind(self, *kinds):
        """Sorted names of the ops whose census kind is one of `kinds`."""
        return sorted({op.name for op in self.ops if op.kind in kinds})

    @property
    def int8_ops(self):
        """Ops that compute on int8 (or int16) activations."""
        return self.ops_of_kind("int8", "int16")

    @property
    def float_ops(self):
        """Ops that compute on float activations (with float or int8 weights)."""
        return self.ops_of_kind("float", "hybrid")

    @property
    def op_census(self):
        """`{"CONV_2D int8": 3, ...}`: how many ops of each name run in each kind."""
        counts = {}
        for op in self.ops:
            key = f"{op.name} {op.kind}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def to_markdown(self):
        """The report as a markdown table (what `str(report)` gives)."""
        rows = [
            ("samples", f"{self.samples:,}"),
            ("max abs diff vs Keras", f"{self.max_abs_diff:.3g}"),
            (f"agreement with Keras ({self.agreement_kind})", f"{self.agreement:.2%}"),
        ]
        if self.metric is not None:
            rows.append((f"{self.metric}: Keras / artifact",
                         f"{self.keras_score:.4f} / {self.artifact_score:.4f}"))
        rows += [("bytes", f"{self.bytes:,}"), ("gzip bytes", f"{self.gzip_bytes:,}")]
        if self.latency_ms is not None:
            rows.append((f"latency, batch 1 ({self.runtime})", f"{self.latency_ms:.4f} ms"))
        if self.weights:
            rows.append(("weights (values by dtype)", ", ".join(
                f"{dtype} {count:,}" for dtype, count in sorted(self.weights.items()))))
        if self.sparse_tensors:
            rows.append(("sparse-encoded weight tensors", str(self.sparse_tensors)))
        for kind, title in _KIND_TITLES.items():
            names = [op.name for op in self.ops if op.kind == kind]
            if names:
                counted = {n: names.count(n) for n in names}
                rows.append((title, ", ".join(
                    n + (f" ×{c}" if c > 1 else "") for n, c in counted.items())))
        lines = [f"**verify** `{self.artifact}` ({self.format})", "",
                 "| check | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines += [f"\nNote: {note}" for note in self.notes]
        return "\n".join(lines)

    __str__ = to_markdown


def verify(artifact, keras_model, data, *, max_samples=None, num_threads=1, latency_runs=200):
    """Runs `artifact` and `keras_model` on `data` and reports the differences.

    Args:
        artifact: flatbuffer bytes, a `.tflite` file, or a SavedModel directory.
        keras_model: the Keras model it was exported from (as trained: pruning
            wrappers and quantization-aware layers may still be in it).
        data: inputs as for `model.predict` (array, dict of arrays for
            multi-input models, `tf.data.Dataset`), or `(x, y)` to also report
            accuracy on the labels `y` (class ids, or 0/1 for one sigmoid output).
        max_samples: compare at most this many samples (default: all).
        num_threads: interpreter threads (1 makes latencies comparable).
        latency_runs: batch-1 inferences timed for the median latency.

    Returns:
        A `VerifyReport`.

    Example:

    ```python
    import tfcompress as tfc
    from tfcompress import examples
    (x, y), _, (xt, yt) = examples.digits()
    model = examples.digits_cnn()
    flat = tfc.export.to_tflite(model, mode="int8", representative_data=x[:200])
    report = tfc.export.verify(flat, model, (xt, yt))
    assert "FULLY_CONNECTED" in report.int8_ops
    ```
    """
    fmt, label, payload = open_artifact(
        artifact, "verify() takes the flatbuffer bytes from to_tflite, a .tflite file path, "
        "or a SavedModel directory")
    # The exported names are those of the stripped model (a pruning wrapper
    # renames its layer); its outputs are the wrapped model's, exactly.
    keras_model = signature.prepare(keras_model)
    inputs = signature.inputs(keras_model)
    features, labels = data_lib.features(data, inputs, "data", max_samples=max_samples,
                                         with_labels=True)
    reference = keras_outputs(keras_model, features)

    if fmt == "tflite":
        ops = census.ops(payload)
        flex = sorted({op.name for op in ops if op.name.startswith("Flex")})
        if flex:
            raise RuntimeError(
                f"The flatbuffer contains TF Select ops {flex}, which the LiteRT "
                "Python interpreter cannot run (it has no Flex delegate), so "
                "verify() cannot check it. Export without allow_tf_ops=True to "
                "get a builtins-only model that it can verify."
            )
        finite.check_flatbuffer(payload, label)  # a NaN scale can crash the interpreter
        weights, sparse = census.weights(payload)
        run = TFLiteRunner(payload, inputs, num_threads)
        size, packed = len(payload), len(gzip.compress(payload, 9))
        runtime = f"LiteRT, {num_threads} thread" + ("s" if num_threads != 1 else "")
    else:
        ops, weights, sparse = [], {}, 0
        run = SavedModelRunner(payload, inputs)
        size, packed = directory_size(payload)
        runtime = "TF serving_default"
    got = run(features)
    outputs, mapping = _compare(reference, got)
    first = next(iter(reference))
    report = VerifyReport(
        artifact=label, format=fmt, samples=len(reference[first]),
        max_abs_diff=max(o["max_abs_diff"] for o in outputs.values()),
        agreement=min(o["agreement"] for o in outputs.values()),
        agreement_kind="/".join(sorted({o["agreement_kind"] for o in outputs.values()})),
        outputs=outputs, bytes=size, gzip_bytes=packed,
        latency_ms=run.latency({n: a[:1] for n, a in features.items()}, latency_runs),
        runtime=runtime, ops=ops, weights=weights, sparse_tensors=sparse,
    )
    if getattr(run, "note", None):
        report.runtime += ", no XNNPACK"
        report.notes.append(run.note)
    if labels is not None:
        names = list(reference)
        wanted = labels_for(labels, first, names)
        chosen = choose(reference[first], wanted, compiled_metric(keras_model, output_name=first))
        report.metric, score = scorer(chosen)
        report.keras_score = score(reference[first], wanted)
        report.artifact_score = score(
            np.asarray(got[mapping[first]], np.float32).reshape(reference[first].shape), wanted)
        if report.metric == "accuracy":
            report.keras_accuracy, report.artifact_accuracy = (report.keras_score,
                                                               report.artifact_score)
    return report


def keras_outputs(model, features):
    """`{output name: array}` of `model` on `features` (`{input name: array}`), in batches."""
    count = len(next(iter(features.values())))
    chunks = []
    for start in range(0, count, _BATCH):
        batch = {name: a[start:start + _BATCH] for name, a in features.items()}
        out = model(signature.to_model_inputs(model, batch), training=False)
        chunks.append({k: np.asarray(v) for k, v in signature.name_outputs(model, out).items()})
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def _match(names, wanted, what):
    """{wanted name: artifact name}, by name, else by position when unambiguous."""
    if set(names) == set(wanted):
        return {n: n for n in wanted}
    if len(names) == len(wanted) == 1:
        return {wanted[0]: names[0]}
    if len(names) == len(wanted):
        ordered = sorted(names, key=lambda n: (len(n), n))
        return dict(zip(wanted, ordered))
    raise ValueError(
        f"The artifact's {what} {sorted(names)} do not match the Keras model's "
        f"{list(wanted)}; verify the artifact against the model it was exported from."
    )


class TFLiteRunner:
    """Runs a flatbuffer's serving signature in LiteRT, as deployed (XNNPACK on).

    If the default XNNPACK delegate refuses the graph (LiteRT 2.3 does for
    sparse int8 FULLY_CONNECTED), it runs on the builtin kernels instead and
    says so in `self.note`.
    """

    def __init__(self, flatbuffer, inputs, num_threads):
        self.flatbuffer, self.num_threads = flatbuffer, num_threads
        self.resolver, self.note = {}, None
        interp = self._interpreter()
        signatures = interp.get_signature_list()
        if not signatures:
            raise ValueError(
                "The flatbuffer has no signature, so its inputs cannot be matched "
                "by name; export it with tfcompress.export.to_tflite."
            )
        self.key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self.in_details = interp.get_signature_runner(self.key).get_input_details()
        self.out_details = interp.get_signature_runner(self.key).get_output_details()
        self.names = _match(list(self.in_details), [i.name for i in inputs], "inputs")
        dynamic = all(d["shape_signature"][:1].tolist() == [-1] for d in self.in_details.values())
        self.batch = _BATCH if dynamic else 1

    def _interpreter(self):
        return census.interpreter(self.flatbuffer, num_threads=self.num_threads, **self.resolver)

    def _feed(self, features):
        return {self.names[name]: _quantize(a, self.in_details[self.names[name]])
                for name, a in features.items()}

    def __call__(self, features):
        try:
            return self._run(features)
        except RuntimeError as error:
            if "delegate" not in str(error).lower() or self.resolver:
                raise
            from ai_edge_litert.interpreter import OpResolverType

            self.resolver = {"experimental_op_resolver_type":
                             OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
            self.note = ("LiteRT's default XNNPACK delegate failed to prepare this "
                         f"model ({str(error).strip()}); it ran on the builtin "
                         "kernels without XNNPACK. A deployment needs the same setting.")
            return self._run(features)

    def _run(self, features):
        runner = self._interpreter().get_signature_runner(self.key)
        count = len(next(iter(features.values())))
        chunks = []
        for start in range(0, count, self.batch):
            batch = {n: a[start:start + self.batch] for n, a in features.items()}
            out = runner(**self._feed(batch))
            chunks.append({n: _dequantize(v, self.out_details[n]) for n, v in out.items()})
        return {n: np.concatenate([c[n] for c in chunks]) for n in chunks[0]}

    def latency(self, sample, runs):
        # A fresh interpreter; only `invoke` is timed.
        interp = self._interpreter()
        details = interp.get_signature_runner(self.key).get_input_details()
        feed = self._feed(sample)
        for name, value in feed.items():
            interp.resize_tensor_input(details[name]["index"], value.shape)
        interp.allocate_tensors()
        for name, value in feed.items():
            interp.set_tensor(details[name]["index"], value)
        return median_ms(interp.invoke, runs)


class SavedModelRunner:
    """Runs a SavedModel's `serving_default` signature on `{input name: array}` features."""

    def __init__(self, path, inputs):
        self.loaded = tf.saved_model.load(path)
        if "serving_default" not in self.loaded.signatures:
            raise ValueError(
                f"The SavedModel at '{path}' has no serving_default signature; "
                "export it with tfcompress.export.to_saved_model."
            )
        self.fn = self.loaded.signatures["serving_default"]
        names = list(self.fn.structured_input_signature[1])
        self.names = _match(names, [i.name for i in inputs], "inputs")

    def _feed(self, features):
        return {self.names[n]: tf.constant(a) for n, a in features.items()}

    def __call__(self, features):
        count = len(next(iter(features.values())))
        chunks = []
        for start in range(0, count, _BATCH):
            batch = {n: a[start:start + _BATCH] for n, a in features.items()}
            chunks.append({k: v.numpy() for k, v in self.fn(**self._feed(batch)).items()})
        return {n: np.concatenate([c[n] for c in chunks]) for n in chunks[0]}

    def latency(self, sample, runs):
        feed = self._feed(sample)
        return median_ms(lambda: self.fn(**feed), runs)


def _quantize(array, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and scale and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def _dequantize(array, detail):
    scale, zero_point = detail["quantization"]
    if array.dtype.kind in "iu" and scale:
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array


def _compare(reference, got):
    mapping = _match(list(got), list(reference), "outputs")
    results = {}
    for name, ref in reference.items():
        out = np.asarray(got[mapping[name]], dtype=np.float32).reshape(ref.shape)
        kind, agree = _agreement(ref, out)
        results[name] = {"max_abs_diff": float(np.max(np.abs(out - ref))),
                         "agreement": agree, "agreement_kind": kind}
    return results, mapping


def _decision(values):
    """How one output's values are read as a decision: (kind, function)."""
    values = np.asarray(values)
    if values.ndim >= 2 and values.shape[-1] > 1:
        return "top-1", lambda v: np.argmax(v, axis=-1)
    if values.min() >= 0 and values.max() <= 1:
        return "threshold 0.5", lambda v: v.reshape(len(v), -1) > 0.5
    return "sign", lambda v: v.reshape(len(v), -1) > 0


def _agreement(ref, out):
    kind, decide = _decision(ref)
    return kind, float(np.mean(decide(ref) == decide(out)))


def median_ms(call, runs):
    """Median wall time of `call()` in milliseconds, after 5 warm-up calls (at most ~2 s)."""
    for _ in range(5):
        call()
    times = []
    deadline = time.perf_counter() + 2.0
    while len(times) < runs and (len(times) < 10 or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def directory_size(path):
    """`(bytes, gzip bytes)` of a directory (e.g. a SavedModel), as a tar.gz."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        tar.add(path, arcname=os.path.basename(os.path.normpath(path)))
    return total, len(buffer.getvalue())
