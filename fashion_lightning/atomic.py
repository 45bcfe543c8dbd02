"""Writing outputs safely: files written aside and renamed into place (a reader never sees half a
file, a failed write leaves the previous file whole, concurrent writers never share a temporary),
with the permissions the umask gives, into folders checked up front by trying to write there."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fashion_lightning.errors import FashionLightningError

if TYPE_CHECKING:  # pandas is not imported for the NumPy reference's sake
    import pandas as pd


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: Path) -> None:
    """The mode an ordinary `open()` or `mkdir()` would have given `path` (0644 / 0755 under umask
    022): `mkstemp` and `mkdtemp` create theirs readable by their owner only, which a teammate, a
    web server or the host side of a Docker volume could not read."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside `path` to write to; renamed onto `path` when the block ends
    normally, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield Path(partial)
        give_umask_mode(Path(partial))
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)  # gone already after a successful rename


def writable_problem(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (created if missing), or None. Tries to create a
    file there rather than asking `os.access`, which says yes to root even under /proc."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"{existing} is not writable ({e.strerror})"
    return None


def check_writable(folder: Path, option: str) -> None:
    """Refuse, before any work, an output folder that cannot be created or written to."""
    problem = writable_problem(folder)
    if problem:
        raise FashionLightningError(
            f"{option} points to {folder}, where nothing can be written: {problem}. Give a folder "
            f"you can write to, e.g. {option}=lightning_logs in the current folder."
        )


def write_atomic_csv(table: "pd.DataFrame", path: Path) -> None:
    """Write next to `path`, then rename: readers never see a half-written file."""
    with atomic_path(path) as partial:
        table.to_csv(partial, index=False, float_format="%.6f")
