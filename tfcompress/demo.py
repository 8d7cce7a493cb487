"""`tfcompress demo`: distil → prune → quantization-aware training → int8 TFLite, on real digits.

Runs on scikit-learn's real 8x8 digits: train a larger teacher CNN, distil it
into a small student while pruning the student to 80 % sparsity with
`PolynomialDecay` (one fit), train the student quantization-aware with the
zeros kept, export it as an int8 `.tflite` (verified in LiteRT) and a
SavedModel, and print the `tfcompress.report.compare` table of every stage:
parameters, non-zeros, sparsity, bytes (raw and gzip), TFLite bytes, batch-1
latency and test accuracy. TensorBoard logs go to `<out_dir>/logs`.
"""

import os
import time

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import examples
from tfcompress.recipe import pipeline


class _Progress(keras.callbacks.Callback):
    def __init__(self, stage, epochs, pruning=False):
        super().__init__()
        self.stage, self.epochs, self.pruning = stage, epochs, pruning
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        line = (f"  [{self.stage}] epoch {epoch + 1}/{self.epochs}  "
                f"loss {logs.get('loss', 0):.3f}  acc {logs.get('accuracy', 0):.3f}  "
                f"val_acc {logs.get('val_accuracy', 0):.3f}")
        if self.pruning:
            line += f"  sparsity {tfc.pruning.sparsity_logs(self.model)['global_sparsity']:.2f}"
        print(line + f"  ({time.time() - self.start:.0f}s)", flush=True)


def run(out_dir="tfcompress_demo", epochs=15, prune_epochs=10, sparsity=0.8, seed=0,
        qat_epochs=3):
    """Runs the demo; returns the `tfcompress.report.compare` table. See the module docstring.

    Example:

    ```python
    from tfcompress import demo
    table = demo.run(out_dir="/tmp/demo", epochs=2, prune_epochs=2)
    ```
    """
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    (x, y), (xv, yv), (xt, yt) = examples.digits(seed)
    print(f"digits: {len(x)} train / {len(xv)} val / {len(xt)} test images (scikit-learn)")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = int(np.ceil(len(x) / 32)) * prune_epochs
    end_step = max(2, int(0.7 * steps))
    schedule = tfc.pruning.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end_step,
                                           frequency=max(1, end_step // 10))

    fit = dict(batch_size=32, validation_data=(xv, yv), verbose=0)

    print("1/5 training the teacher, a larger CNN: digits_cnn(width=32)", flush=True)
    teacher, _ = pipeline.fit_stage(
        examples.digits_cnn(width=32), [], x, y, epochs=epochs,
        compile_kwargs=dict(optimizer=keras.optimizers.Adam(3e-3), loss=loss,
                            metrics=["accuracy"]),
        callbacks=[_Progress("teacher", epochs)], **fit)

    print(f"2/5 distilling into digits_cnn() while pruning to {sparsity:.0%} with {schedule}",
          flush=True)
    log_dir = os.path.join(out_dir, "logs")
    stripped, distiller = tfc.recipe.distill_and_prune(
        teacher, examples.digits_cnn(), x, y, loss, pruning_schedule=schedule,
        epochs=prune_epochs, batch_size=32, optimizer=keras.optimizers.Adam(3e-3),
        validation_data=(xv, yv), log_dir=log_dir,
        callbacks=[_Progress("distil+prune", prune_epochs, pruning=True)])
    pruned = distiller.student  # still wrapped: QAT below keeps its zeros

    print("3/5 quantization-aware training (pruned zeros kept)", flush=True)
    quantize = tfc.core.techniques.stages()["quantize"]
    qat_recipe = tfc.recipe.validate({"quantize": {"preserve_sparsity": True}})
    qat, _ = pipeline.fit_stage(
        pruned, [lambda model: quantize.prepare(model, qat_recipe)], x, y, epochs=qat_epochs,
        compile_kwargs=dict(optimizer=keras.optimizers.Adam(3e-4), loss=loss,
                            metrics=["accuracy"]),
        log_dir=os.path.join(log_dir, "qat"), callbacks=[_Progress("qat", qat_epochs)], **fit)

    print("4/5 exporting int8 TFLite + SavedModel", flush=True)
    teacher.trainable = True  # the Distiller froze it; count its weights as parameters
    paths = {name: os.path.join(out_dir, name) for name in (
        "teacher.keras", "pruned.keras", "model_int8.tflite", "saved_model")}
    tfc.core.map_layers(teacher, tfc.core.copy_layer).save(paths["teacher.keras"])  # no optimizer
    stripped.save(paths["pruned.keras"])
    tfc.export.to_tflite(qat, paths["model_int8.tflite"], mode="int8", overwrite=True)
    tfc.export.to_saved_model(stripped, paths["saved_model"], overwrite=True)

    print("5/5 measuring every stage on the test split (int8 in LiteRT)", flush=True)
    table = tfc.report.compare({
        "dense teacher": paths["teacher.keras"],
        "pruned (stripped)": paths["pruned.keras"],
        "pruned + QAT (int8 .tflite)": paths["model_int8.tflite"],
        "pruned (SavedModel)": paths["saved_model"],
    }, (xt, yt), metric="accuracy", latency_runs=50)
    print()
    print(tfc.report.to_markdown(table))
    print()
    print("int8 TFLite vs the Keras QAT model (LiteRT):")
    print(tfc.export.verify(paths["model_int8.tflite"], qat, (xt, yt)))
    print()
    print(f"models: {', '.join(paths.values())}")
    print(f"TensorBoard logs: {log_dir}  (open with: tensorboard --logdir {log_dir})")
    return table
