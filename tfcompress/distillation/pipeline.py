"""One training run that distils a teacher into a pruned student."""

import keras

from tfcompress import pruning
from tfcompress.core import steps as core_steps
from tfcompress.distillation.distiller import Distiller
from tfcompress.distillation.logits import LogitsDistillation


def distill_and_prune(teacher, student, x, y, loss, pruning_schedule=None, sparsity=0.8,
                      temperature=4.0, student_loss_weight=0.3, epochs=10, batch_size=32,
                      optimizer=None, metrics=("accuracy",), validation_data=None,
                      callbacks=(), log_dir=None, quantize=False, verbose=0):
    """Distils `teacher` into a pruned (and optionally QAT) copy of `student` in one `fit`.

    The student is wrapped with `tfcompress.pruning.prune_low_magnitude` (a
    copy: `student` itself is not changed), optionally made
    quantization-aware on top, trained by a `Distiller` with Hinton's
    `LogitsDistillation(temperature)` mixed with the label `loss` while
    `UpdatePruningStep` raises its sparsity, and returned with the pruning
    wrappers stripped (zeros in the weights; QAT layers kept for conversion).

    Args:
        teacher: a trained, built classifier that outputs logits.
        student: a Sequential/functional classifier with the same outputs.
        x, y: training data and integer labels.
        loss: the student's label loss.
        pruning_schedule: a `PruningSchedule`; default `PolynomialDecay`
            from 0 to `sparsity` over the first 70 % of the steps.
        sparsity: target sparsity of the default schedule.
        temperature, student_loss_weight: see `LogitsDistillation`, `Distiller`.
        epochs, batch_size, optimizer, metrics, validation_data, verbose:
            passed to `compile`/`fit` (optimizer default `Adam(1e-3)`).
        callbacks: extra callbacks (`self.model` in them is the Distiller).
        log_dir: if set, `tfcompress.CompressionSummaries(log_dir)` logs the
            loss components, the sparsity and (with `quantize`) the QAT
            ranges to TensorBoard.
        quantize: False (default) trains in float. True adds
            quantization-aware training in the same fit
            (`tfcompress.quantization.quantize_model` with
            `Default8BitPrunePreserveQuantizeScheme`, which keeps pruned
            weights at zero); convert the result with
            `tfcompress.export.to_tflite(model, mode="int8")`. A function
            `quantize(pruned_student) -> (model, callbacks)` plugs in another
            scheme.

    Returns:
        `(student, distiller)`: the trained student passed through
        `strip_pruning` (with QAT, the pruning wrappers inside the QAT layers
        stay; `tfcompress.export.to_tflite` bakes their zeros into the int8
        weights), and the `Distiller`, whose `history` holds the fit History
        (every loss component included).

    Example:

    ```python
    import keras
    import tfcompress as tfc
    from tfcompress import examples

    (x, y), _, _ = examples.digits()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = examples.digits_cnn(width=32)
    teacher.compile("adam", loss)
    teacher.fit(x, y, epochs=2, verbose=0)
    small, distiller = tfc.distillation.distill_and_prune(
        teacher, examples.digits_cnn(width=8), x, y, loss, epochs=2, quantize=True)
    int8 = tfc.export.to_tflite(small, mode="int8")  # no calibration data needed after QAT
    ```
    """
    if pruning_schedule is None:
        total = core_steps.steps_per_epoch(x, batch_size) * epochs
        end_step = max(2, int(0.7 * total))
        pruning_schedule = pruning.PolynomialDecay(0.0, sparsity, begin_step=0,
                                                   end_step=end_step,
                                                   frequency=max(1, end_step // 10))
    pruned = pruning.prune_low_magnitude(student, pruning_schedule=pruning_schedule)
    step_callbacks = [pruning.UpdatePruningStep()]
    if quantize is True:
        quantize = _prune_preserving_qat
    if quantize:  # QAT wrappers on top of the pruning wrappers, trained in the same fit
        pruned, qat_callbacks = quantize(pruned)
        step_callbacks += list(qat_callbacks)
    if log_dir is not None:
        from tfcompress.summaries import CompressionSummaries  # imports every technique

        step_callbacks.append(CompressionSummaries(log_dir=log_dir))
    distiller = Distiller(teacher, pruned, LogitsDistillation(temperature),
                          student_loss_weight=student_loss_weight)
    distiller.compile(optimizer or keras.optimizers.Adam(1e-3), loss, metrics=list(metrics))
    distiller.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=validation_data,
                  verbose=verbose, callbacks=step_callbacks + list(callbacks))
    return pruning.strip_pruning(distiller.student), distiller


def _prune_preserving_qat(pruned):
    from tfcompress import quantization

    scheme = quantization.Default8BitPrunePreserveQuantizeScheme()
    return quantization.quantize_model(pruned, scheme=scheme), []
