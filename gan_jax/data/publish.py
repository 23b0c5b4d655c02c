"""Publishing a folder atomically: written as a hidden `.<name>.incomplete-<random>/` folder owned by this process
(pid, host), flushed to disk, and renamed to its final name as the very last step, so an interrupted writer never
leaves a folder that looks complete; `remove_stale` deletes the leftovers of dead writers on this host.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket

from gan_jax.errors import GanJaxError

_INCOMPLETE = ".incomplete-"
_REPLACED = ".replaced-"
_OWNER = "owner.json"


def make_dirs(path: str) -> list[str]:
    """Creates `path` and its missing parents; the folders created, outermost first."""
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    created: list[str] = []
    try:
        for folder in reversed(missing):
            os.mkdir(folder)
            created.append(folder)
    except OSError:
        for folder in reversed(created):
            rmdir_quietly(folder)
        raise
    return created


def rmdir_quietly(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def make_temp(data_dir: str, name: str) -> str:
    """<data_dir>/.<name>.incomplete-<random>/ with an owner file naming this process and host."""
    tmp = os.path.join(data_dir, f".{name}{_INCOMPLETE}{secrets.token_hex(4)}")
    os.mkdir(tmp)
    with open(os.path.join(tmp, _OWNER), "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return tmp


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(data_dir: str, name: str) -> None:
    """Removes .<name>.incomplete-* folders left by dead processes of this host (killed prepare runs)."""
    prefix = f".{name}{_INCOMPLETE}"
    for entry in os.listdir(data_dir):
        if not entry.startswith(prefix):
            continue
        folder = os.path.join(data_dir, entry)
        try:
            with open(os.path.join(folder, _OWNER)) as f:
                owner = json.load(f)
            stale = owner["host"] == socket.gethostname() and not pid_alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: left alone, and never read as a dataset
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def fsync_tree(root: str) -> None:
    """Flushes every file and folder under `root` to disk, so the rename publishes complete files."""
    for folder, _, names in os.walk(root):
        for path in [os.path.join(folder, n) for n in names] + [folder]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def commit(tmp: str, target: str, overwrite: bool, marker: str) -> None:
    """Renames the finished `tmp` folder to `target`; an existing dataset (a folder holding `marker`) is set aside
    first (overwrite) and removed after the rename."""
    os.remove(os.path.join(tmp, _OWNER))
    old = None
    if os.path.lexists(target) and os.path.isfile(os.path.join(target, marker)):
        if not overwrite:  # appeared while this run was writing
            raise GanJaxError(f"dataset {os.path.basename(target)!r} appeared at {target} while preparing: pass "
                              "--overwrite (overwrite=True) to replace it")
        old = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}{_REPLACED}{secrets.token_hex(4)}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError as err:
        if old is not None:
            os.rename(old, target)
        raise GanJaxError(f"cannot move the finished dataset to {target} ({err.strerror}): move that path away "
                          "and rerun") from err
    fd = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
