"""The contract a technique plugs into: one registration with the core.

A technique is a folder (`tfcompress/pruning/`, `tfcompress/quantization/`,
...) that owns its wrapper (a `WeightWrapper` subclass: `order`,
`kept_by_strip`, `step_driven`, `transform_weights`), its rules (a table read
through `core.rules`), and registers, with one `register(Technique(...))`
line in its `__init__.py`, what the workflows ask of it:

- `section(model, histograms)`: its TensorBoard view, a
  `core.summaries.Section` or None (see `CompressionSummaries`);
- `stage`: its recipe stage, a `Stage` (see `tfcompress.recipe`);
- `columns(model)`: extra report columns for a Keras model, `{name: value}`
  (see `tfcompress.report.compare`);
- `preserve(layer, preserve_sparsity)`: its wrapper re-made around a plain
  layer from what stripping left in the weights (shared values), or None;
  a quantization scheme that preserves the technique asks for it
  (`Default8BitClusterPreserveQuantizeScheme`).

`strip`, export, save/load, the report's parameter counts and the step
callback need nothing more: they work through the `WeightWrapper` contract.
No technique imports another; the core and the workflows find them here.
"""

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class Stage:
    """A technique's recipe stage.

    Attributes:
        key: the recipe section that turns it on (`"prune"`).
        defaults: `{setting: default}` of that section; `REQUIRED` marks a
            setting without a default.
        check: `check(section)` raises `ValueError` on a bad value (may
            normalise the section in place).
        prepare: `prepare(model, section, steps)` → `(model, callbacks)`:
            the model wrapped for the stage and the callbacks its fit needs;
            `steps` is the number of training steps of the stage.
        role: `"transform"` (trained in the first fit, stripped for the
            float exports), `"teacher"` (`prepare` wraps the first fit's
            model, e.g. a Distiller) or `"final"` (its own later fit; its
            model is the int8 export).
        order: stages of one role run in increasing order.
        log_name: the TensorBoard folder of a `"final"` stage's fit
            (`<out_dir>/logs/<log_name>`); default: `key`.
        finish: `finish(model) -> model`, run on the stripped model after a
            `"transform"` stage's fit (`tfcompress.shrink` removes pruned
            channels); later stages start from its result.

    Example:

    ```python
    from tfcompress.core import techniques
    stage = techniques.Stage("noop", {"epochs": 1}, lambda s: None,
                             lambda model, section, steps: (model, []))
    ```
    """

    key: str
    defaults: dict
    check: typing.Callable
    prepare: typing.Callable
    role: str = "transform"
    order: int = 0
    log_name: str = None
    finish: typing.Callable = None


#: Marks a stage setting that has no default.
REQUIRED = "<required>"


@dataclasses.dataclass(frozen=True)
class Technique:
    """What a technique registers with the core (see the module docstring).

    Example:

    ```python
    from tfcompress.core import techniques
    techniques.Technique("rounding")   # a technique with no views of its own
    ```
    """

    name: str
    section: typing.Callable = None
    stage: Stage = None
    columns: typing.Callable = None
    preserve: typing.Callable = None


_REGISTERED = {}


def register(technique):
    """Registers `technique` (by name; registering a name again replaces it).

    Example:

    ```python
    from tfcompress.core import techniques
    techniques.register(techniques.Technique("rounding"))
    assert "rounding" in [t.name for t in techniques.registered()]
    ```
    """
    if not isinstance(technique, Technique):
        raise TypeError(f"register takes a tfcompress.core.techniques.Technique, got "
                        f"{type(technique).__name__}.")
    _REGISTERED[technique.name] = technique
    return technique


def unregister(name):
    """Removes the technique registered as `name` (e.g. one a test registered).

    Example:

    ```python
    from tfcompress.core import techniques
    techniques.register(techniques.Technique("rounding"))
    techniques.unregister("rounding")
    ```
    """
    _REGISTERED.pop(name, None)


def registered():
    """The registered techniques, in registration order.

    Example:

    ```python
    import tfcompress
    from tfcompress.core import techniques
    names = [t.name for t in techniques.registered()]   # pruning, quantization, ...
    ```
    """
    return list(_REGISTERED.values())


def sections():
    """`{technique name: section function}` of the techniques that log to TensorBoard."""
    return {t.name: t.section for t in registered() if t.section is not None}


def stages():
    """`{recipe key: Stage}` of the techniques that have a recipe stage."""
    return {t.stage.key: t.stage for t in registered() if t.stage is not None}


def preserver(name):
    """The `preserve` function of the technique registered as `name`, or an error."""
    technique = _REGISTERED.get(name)
    if technique is None or technique.preserve is None:
        raise ValueError(f"No registered technique '{name}' re-makes its wrappers on plain "
                         f"layers; those that do: "
                         f"{[t.name for t in registered() if t.preserve is not None]}.")
    return technique.preserve


def columns(model):
    """The registered techniques' extra report columns for a Keras `model`."""
    found = {}
    for technique in registered():
        if technique.columns is not None:
            found.update(technique.columns(model))
    return found
