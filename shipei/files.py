"""The files a user names for shipei to write (a plot, a JSON report, a checkpoint), checked before
the work that produces them, so that a bad path fails at once rather than after a training run."""

from __future__ import annotations

from pathlib import Path

from .ir.errors import ShipeiError


def writable_file(path: str | Path, what: str, *, replaced: bool = False) -> Path:
    """`path` as a file to write `what` to: in a folder that exists, and not a folder, a device or
    a pipe. `replaced`: the file is written beside it and renamed over it (a checkpoint, so that
    a failure leaves the last one whole), which would put a file where a symbolic link was, so
    that is refused too."""
    path = Path(path)
    if path.name in ("", ".", "..") or path.exists() and not path.is_file() or replaced and path.is_symlink():
        raise ShipeiError(f"{what} {path}: not a file to write", hint="give a new file's path")
    if not path.parent.is_dir():
        raise ShipeiError(f"{what} {path}: {path.parent} is not a folder")
    return path


def writable_folder(path: str | Path, what: str) -> Path:
    """`path` as a folder to write `what` into: one that exists, or one that can be made (its
    nearest existing ancestor is a folder)."""
    path = Path(path)
    there = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not there.is_dir():
        raise ShipeiError(f"{what} {path}: {there} is not a folder", hint="give a folder's path")
    return path
