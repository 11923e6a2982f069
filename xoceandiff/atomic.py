"""Writing files and folders atomically: a temporary name beside the target, renamed on success.

The one atomic-write helper of the package: checkpoints, training states, NetCDF files, restarts,
reports and figures all go through :func:`atomic_path`. An error (or a kill) mid-write leaves nothing at
the target path, and an existing path is only replaced with ``overwrite=True``. Temporary names start
with a dot and end in ``.part`` (so no tool mistakes them for a result); they carry the writer's process
id, so that one left behind by a killed process is removed by the next write to the same path.

This module is a leaf: it knows the file system and the package's errors, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["atomic_path", "remove_stale_parts", "replace_path", "temp_path", "refuse_existing", "discard"]

_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def temp_path(target: Path) -> Path:
    # A dot-name that ends in neither .nc nor _<digits>.nc, so no tool mistakes it for a result.
    return target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_parts(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``target`` left behind by writer processes that no longer exist.

    A writer that is killed (``SIGKILL``, power loss) cannot clean up; its ``.part`` file carries its
    process id, so the next write to the same path removes it. Temporary files of live processes are
    left alone.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.glob(f".{_glob_escape(target.name)}.*.part"):
        match = _PART_RE.match(candidate.name)
        if match is None or match["name"] != target.name or _pid_alive(int(match["pid"])):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (``[``, ``*``, ``?``)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def refuse_existing(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{str(target)!r} exists; pass overwrite=True (--overwrite on the command line) to replace it."
        )


def discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The block may write a file or a folder at the temporary path; an existing folder at ``path`` is
    replaced whole (see :func:`replace_path`).

    The temporary file (or folder) is removed when the block raises, including on
    ``KeyboardInterrupt``; temporary files of killed writers are removed on the next write.

    Parameters
    ----------
    path : path
        The final path.
    overwrite : bool
        Replace ``path`` if it exists.

    Raises
    ------
    xoceandiff.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    target = Path(path)
    refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target)
    tmp = temp_path(target)
    try:
        yield tmp
        if not overwrite:  # someone else may have written it meanwhile
            refuse_existing(target, overwrite)
        replace_path(tmp, target)
    finally:
        discard(tmp)


def replace_path(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished ``tmp`` (file or folder) to ``target``, replacing what is there.

    ``rename`` cannot replace a non-empty folder: the old one is moved aside first, put back if the new
    one cannot take its place, and removed only once the new one is in place.
    """
    tmp, target = Path(tmp), Path(target)
    if not (target.is_dir() and not target.is_symlink()):
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    aside = old / "previous"
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(aside, target)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
