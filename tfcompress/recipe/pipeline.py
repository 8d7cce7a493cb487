"""One training stage, the code every workflow runs: prepare → (distil) → fit.

`fit_stage` is what `recipe.run`, `distill_and_prune` and `tfcompress demo`
train with: apply each stage's `prepare` to the model in turn (wrap for
pruning, make quantization-aware, ...), put the result in a teacher's
`Distiller` when there is one, compile, and fit with every callback the
stages asked for plus TensorBoard summaries of every technique present.
"""

import keras

from tfcompress.core import CompressionSummaries, steps, strip


def fit_stage(model, prepares, x, y, *, compile_kwargs, epochs, teacher=None, log_dir=None,
              callbacks=(), **fit_kwargs):
    """Runs one training stage; returns `(model, trainee)`.

    Args:
        model: the model to train (not changed: the stages wrap copies).
        prepares: functions `prepare(model) -> (model, callbacks)`, applied in
            order (e.g. a technique's `Stage.prepare` bound to its section).
        x, y: the training data.
        compile_kwargs: `compile()` arguments (a fresh optimizer each stage).
        epochs: epochs of the fit.
        teacher: `prepare(model) -> (distiller, callbacks)` that wraps the
            model in a `Distiller`, or None.
        log_dir: if set, `tfcompress.CompressionSummaries(log_dir)` logs every
            technique present.
        callbacks: extra callbacks (`self.model` in them is the trainee).
        **fit_kwargs: passed to `fit` (batch_size, validation_data, verbose).

    Returns:
        `(model, trainee)`: the trained model with its wrappers still on (strip
        it with `tfcompress.strip`), and what was fit (the model, or its
        Distiller, whose `history` holds the fit's History).

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc
    from tfcompress.recipe import pipeline
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    def prune(model):
        return tfc.pruning.prune_low_magnitude(model), [tfc.pruning.UpdatePruningStep()]
    pruned, _ = pipeline.fit_stage(base, [prune], np.ones((16, 4)), np.ones((16, 2)),
                                   compile_kwargs={"optimizer": "sgd", "loss": "mse"},
                                   epochs=1, verbose=0)
    ```
    """
    stage_callbacks = []
    for prepare in prepares:
        model, more = prepare(model)
        stage_callbacks += list(more)
    trainee = model
    if teacher is not None:
        trainee, more = teacher(model)
        stage_callbacks += list(more)
    # One step callback drives every technique's wrappers: keep the first.
    bound = [c for c in stage_callbacks if isinstance(c, steps.StepCallback)][:1]
    stage_callbacks = [c for c in stage_callbacks
                       if not isinstance(c, steps.StepCallback) or c in bound]
    if log_dir is not None:
        stage_callbacks.append(CompressionSummaries(log_dir=log_dir))
    trainee.compile(**compile_kwargs)
    trainee.fit(x, y, epochs=epochs, callbacks=stage_callbacks + list(callbacks), **fit_kwargs)
    return model, trainee


def distill_and_prune(teacher, student, x, y, loss, pruning_schedule=None, sparsity=0.8,
                      temperature=4.0, student_loss_weight=0.3, epochs=10, batch_size=32,
                      optimizer=None, metrics=("accuracy",), validation_data=None,
                      callbacks=(), log_dir=None, quantize=False, verbose=0):
    """Distils `teacher` into a pruned (and optionally QAT) copy of `student` in one `fit`.

    The recipe's stages in one `fit_stage`: the student is pruned (a copy:
    `student` itself is not changed) with the `"prune"` stage, optionally
    made quantization-aware on top with the `"quantize"` stage, and trained
    by a `Distiller` with Hinton's `LogitsDistillation(temperature)` mixed
    with the label `loss` while its sparsity rises; it comes back stripped
    (zeros in the weights; QAT layers kept for conversion).

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
            quantization-aware training in the same fit (the `"quantize"`
            stage, which keeps pruned weights at zero); convert the result
            with `tfcompress.export.to_tflite(model, mode="int8")`. A function
            `quantize(pruned_student) -> (model, callbacks)` plugs in another
            scheme.

    Returns:
        `(student, distiller)`: the trained student passed through
        `tfcompress.strip` (with QAT, the quantization wrappers stay, around
        layers whose zeros are baked in), and the `Distiller`, whose
        `history` holds the fit History (every loss component included);
        `distiller.student` is the student with its wrappers still on.

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
    small, distiller = tfc.recipe.distill_and_prune(
        teacher, examples.digits_cnn(width=8), x, y, loss, epochs=2, quantize=True)
    int8 = tfc.export.to_tflite(small, mode="int8")  # no calibration data needed after QAT
    ```
    """
    from tfcompress.core import techniques
    from tfcompress.recipe.schema import validate

    stages = techniques.stages()
    r = validate({"prune": {"final_sparsity": sparsity}, "quantize": {},
                  "distill": {"teacher": teacher, "temperature": temperature,
                              "student_loss_weight": student_loss_weight}})
    total = steps.steps_per_epoch(x, batch_size) * epochs

    def prune(model):
        if pruning_schedule is None:
            return stages["prune"].prepare(model, r, total)
        from tfcompress import pruning

        return (pruning.prune_low_magnitude(model, pruning_schedule=pruning_schedule),
                [pruning.UpdatePruningStep()])

    prepares = [prune]
    if quantize is True:
        prepares.append(lambda model: stages["quantize"].prepare(model, r, total))
    elif quantize:
        prepares.append(quantize)
    pruned, distiller = fit_stage(
        student, prepares, x, y, teacher=lambda model: stages["distill"].prepare(model, r),
        compile_kwargs={"optimizer": optimizer or keras.optimizers.Adam(1e-3), "loss": loss,
                        "metrics": list(metrics)},
        epochs=epochs, log_dir=log_dir, callbacks=callbacks, batch_size=batch_size,
        validation_data=validation_data, verbose=verbose)
    return strip(pruned), distiller
