"""Checks for recipe settings, shared by every stage: one message shape for a bad value.

Each raises `ValueError("'<section>.<key>' must be <allowed>, got <value>.")`.
"""


def fail(section, key, value, allowed):
    """Raises the error for a bad `section.key`.

    Example:

    ```python
    from tfcompress.core import settings
    try:
        settings.fail("prune", "power", -1, "a number > 0")
    except ValueError as error:
        assert "'prune.power' must be a number > 0" in str(error)
    ```
    """
    raise ValueError(f"'{section}.{key}' must be {allowed}, got {value!r}.")


def check_int(section, key, value, minimum=0, optional=False):
    """An int (not a bool) `>= minimum`, or None when `optional`.

    Example:

    ```python
    from tfcompress.core import settings
    settings.check_int("train", "batch_size", 32, minimum=1)
    ```
    """
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        fail(section, key, value, f"an int >= {minimum}" + (" or null" if optional else ""))


def check_number(section, key, value, low=None, high=None, optional=False, text=None):
    """A number (not a bool) `> low` and `<= high`, or None when `optional`.

    Example:

    ```python
    from tfcompress.core import settings
    settings.check_number("train", "learning_rate", 1e-3, low=0)
    ```
    """
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None and not value > low:
        ok = False
    if ok and high is not None and not value <= high:
        ok = False
    if not ok:
        fail(section, key, value, text or "a number")


def check_bool(section, key, value):
    """True or False.

    Example:

    ```python
    from tfcompress.core import settings
    settings.check_bool("export", "sparse", False)
    ```
    """
    if not isinstance(value, bool):
        fail(section, key, value, "true or false")


def check_names(section, key, value, allowed, optional=False):
    """A list (or tuple) of non-empty layer names, or None when `optional`.

    Example:

    ```python
    from tfcompress.core import settings
    settings.check_names("prune", "skip_layers", ["click"], "a list of layer names")
    ```
    """
    if optional and value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) and n for n in value):
        fail(section, key, value, allowed)
