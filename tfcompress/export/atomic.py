"""All-or-nothing writes: a temporary sibling first, then one rename.

An export that fails or is killed half-way leaves no partial file or
directory at the target path, and an existing target is only replaced when
the caller says `overwrite=True`.
"""

import contextlib
import os
import shutil
import tempfile


def check_target(path, overwrite, kind="file"):
    """Fails early, before any conversion work, if `path` cannot be written.

    Creates missing parent directories. Returns the absolute path.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path) and kind == "file":
        raise IsADirectoryError(
            f"Cannot write the export to '{path}': it is a directory. Pass a "
            "file path, e.g. 'model.tflite'."
        )
    if os.path.lexists(path) and kind == "directory" and not os.path.isdir(path):
        raise FileExistsError(
            f"Cannot write a SavedModel to '{path}': a file with that name "
            "exists. Pass a directory path, or remove the file."
        )
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"'{path}' already exists and would be replaced. Pass "
            "overwrite=True to replace it, or choose another path."
        )
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".tfcompress-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise OSError(
            f"Cannot write to '{path}': its directory '{parent}' cannot be "
            f"created or written ({error.strerror or error}). Choose a path in "
            "a writable directory."
        ) from None
    return path


def write_bytes(path, data, overwrite=False):
    """Writes `data` to `path` atomically; returns the absolute path."""
    path = check_target(path, overwrite)
    parent, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` appeared meanwhile: no clobbering
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path


@contextlib.contextmanager
def directory(path, overwrite=False):
    """Yields a temporary directory next to `path`; renames it into place on success.

    On any error (or if the process dies) the target is untouched and the
    temporary directory is removed (or left as a hidden `.name.*.tmp` sibling
    if the process was killed).
    """
    path = check_target(path, overwrite, kind="directory")
    parent, name = os.path.split(path)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        yield tmp
        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(
                    f"'{path}' appeared while exporting; pass overwrite=True "
                    "to replace it."
                )
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
            os.rename(path, os.path.join(old, "previous"))
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(os.path.join(old, "previous"), path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
