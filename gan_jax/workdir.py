"""The run folder (--workdir): created with a marker, refused when it holds someone else's files, one writer at a time.

A training run calls, on every process, after `jax.distributed` is initialised (multi-host):

    path = workdir.prepare(flag_value)   # create it, or check it is a gan_jax run folder
    lock = workdir.acquire(path)         # process 0 takes the OS lock; a second run fails at once
    try: ... train, Checkpointer(path, cfg, lock=lock) ...
    finally: lock.release()

- Marker: `<workdir>/.gan_jax_workdir` (JSON: toolkit version, creation time, host) is written when the folder is
  created or found empty. An existing folder with files but no marker is refused and nothing is written in it.
- Paths: the folder and the run's records are reached through `etils.epath` (orbax's own path type; `as_path`):
  a local path (made absolute) or a URL such as `gs://bucket/run` where epath's file-system support for it is
  installed. Only local paths are tested; what is safe on which storage is stated in BUILD.md.
- Lock: `fcntl.flock` on `<workdir>/.gan_jax.lock`, held open for the run. The kernel drops it when the holder
  exits or is killed (no stale locks). The file names the holder (pid, host, start time); a second acquirer
  fails at once with `WorkdirLockedError` naming it. flock works across machines on NFSv4 (Linux emulates it
  with POSIX byte-range locks since 2.6.12); on file systems without lock support (some Lustre mounts) it
  fails with an error naming the folder. A URL workdir (object storage) has no flock: nothing is enforced, the
  run says so in one line on stderr and goes on, and its lock object holds nothing.
- Multi-process: only process 0 (`is_writer`, default `jax.process_index() == 0`) writes the marker and holds
  the lock; the others take the same decision as process 0 (its outcome is broadcast), so all of them either
  continue or raise together. Call both after `jax.distributed.initialize` (they query the process index and
  count, which starts JAX's backend).
- The lock belongs to the open file: a child made by fork() (not exec) inherits it and keeps it until it exits.
- An empty or blank path is refused (`resolve`): it would mean the current directory.
- Files other programs may read while the run writes them (the marker, the configs, summaries) are written whole
  (`atomic_write`: a temporary beside them, renamed over them).
- A full disk while the run writes: `gan_jax.disk_full`.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import socket
import sys
from typing import IO, Any, Iterator, Optional, Union

from etils import epath

from gan_jax.errors import GanJaxError

PathLike = Union[str, os.PathLike]

MARKER = ".gan_jax_workdir"
LOCK_FILE = ".gan_jax.lock"
CHECKPOINTS = "checkpoints"


class WorkdirError(GanJaxError):
    """The workdir cannot be used: a file, not writable, or a folder that gan_jax did not create."""


class WorkdirLockedError(WorkdirError):
    """Another live process holds the workdir's lock."""


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(path: PathLike) -> Optional[str]:
    """The scheme of a URL path ("gs" for gs://bucket/run: object storage), None for a local path."""
    match = _URL.match(os.fspath(path))
    return match.group(1) if match else None


def as_path(path: PathLike) -> epath.Path:
    """`path` as an epath.Path: a local path made absolute, a URL (gs://...) kept as it is."""
    text = os.fspath(path)
    return epath.Path(text if url_scheme(text) else os.path.abspath(text))


def resolve(workdir: PathLike) -> str:
    """The absolute path (or URL) of a --workdir value; WorkdirError for an empty or blank one (the current
    directory)."""
    if not os.fspath(workdir).strip():
        raise WorkdirError(f"--workdir={workdir!r} is empty: give the run's folder, e.g. --workdir=runs/ring8 "
                           "(an empty path would put the run's files in the current directory)")
    return os.fspath(as_path(workdir))


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """A file open for writing (`mode` "w" or "wb") whose content replaces `path` whole when the block ends: a
    temporary beside it, renamed over it; if the block raises, `path` stays as it was and the temporary goes."""
    target = as_path(path)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        with tmp.open(mode) as f:
            yield f
        tmp.replace(target)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def _reason(err: OSError) -> str:
    """What went wrong, in a few words: the OS's message, or the storage library's text (which sets no strerror)."""
    return err.strerror or str(err)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def _default_is_writer(is_writer: Optional[bool]) -> bool:
    if is_writer is not None:
        return is_writer
    import jax

    return jax.process_index() == 0


def _agree(ok: bool, is_writer: bool) -> bool:
    """Process 0's `ok` on every process (a collective when there are several processes), else `ok`."""
    if "jax" not in sys.modules:
        return ok  # jax not even imported: one process, and its backend stays uninitialised
    import jax

    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    flag = multihost_utils.broadcast_one_to_all(np.int32(1 if ok else 0), is_source=is_writer)
    return bool(int(flag))


def _marker_content() -> dict[str, Any]:
    from gan_jax import __version__

    return {"created_by": "gan_jax", "version": __version__, "created": _now(), "host": socket.gethostname()}


def _write_marker(path: str) -> None:
    try:
        with atomic_write(epath.Path(path) / MARKER) as f:
            json.dump(_marker_content(), f, indent=2)
            f.write("\n")
    except OSError as err:
        raise WorkdirError(f"--workdir {path} is not writable ({_reason(err)}): choose a folder you can "
                           "write to") from err


def _nearest_existing(folder: epath.Path) -> epath.Path:
    """`folder` or its nearest ancestor that exists; the file system's root, or a URL's bucket, at most."""
    while not (folder.parent == folder or os.fspath(folder.parent).endswith("://")) and not folder.exists():
        folder = folder.parent
    return folder


def _check_and_create(path: str) -> None:
    """The writer's part of `prepare`: checks, then creates the folder and/or its marker."""
    root = epath.Path(path)
    exists = root.exists()
    if exists and not root.is_dir():
        raise WorkdirError(f"--workdir {path} is a file, not a folder: choose another path")
    if not exists:
        ancestor = _nearest_existing(root)
        if ancestor.exists() and not ancestor.is_dir():
            raise WorkdirError(f"--workdir {path} cannot be created: {ancestor} is a file, not a folder")
        try:
            root.mkdir(parents=True)
        except FileExistsError:
            pass  # created concurrently; checked below like any existing folder
        except OSError as err:
            raise WorkdirError(f"--workdir {path} cannot be created ({_reason(err)} in {ancestor}): "
                               "choose a folder you can write to") from err
        else:
            _write_marker(path)
            return
    try:
        entries = sorted(entry.name for entry in root.iterdir())
    except OSError as err:
        raise WorkdirError(f"--workdir {path} cannot be read ({_reason(err)})") from err
    if not url_scheme(path) and not os.access(path, os.W_OK | os.X_OK):  # object storage: found out on writing
        raise WorkdirError(f"--workdir {path} is not writable: choose a folder you can write to, "
                           "or fix its permissions")
    if MARKER in entries:
        checkpoints = root / CHECKPOINTS
        if checkpoints.exists() and not checkpoints.is_dir():
            raise WorkdirError(f"{checkpoints} is a file, not a folder: gan_jax keeps its checkpoints there; "
                               "move the file away or choose another --workdir")
        return
    if not entries:
        _write_marker(path)
        return
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
    raise WorkdirError(
        f"--workdir {path} is not empty and was not created by gan_jax (no {MARKER} in it; it holds {shown}). "
        "Choose a new or empty folder; nothing was written. If it is a run folder of an older gan_jax, mark it "
        f"once with: python -c \"from gan_jax import workdir; workdir.mark('{path}')\"")


def prepare(workdir: PathLike, *, is_writer: Optional[bool] = None) -> str:
    """Creates `workdir` (+ marker) or checks it is a gan_jax run folder; returns its absolute path or URL; else
    WorkdirError.

    `is_writer` (default: `jax.process_index() == 0`): the one process that creates and writes. With several
    processes this is a collective: every process calls it, and all raise when process 0 refuses.
    """
    path = resolve(workdir)
    is_writer = _default_is_writer(is_writer)
    error: Optional[WorkdirError] = None
    if is_writer:
        try:
            _check_and_create(path)
        except WorkdirError as err:
            error = err
    if not _agree(error is None, is_writer):
        raise error or WorkdirError(f"--workdir {path} was refused by process 0 (its error says why)")
    return path


def mark(workdir: PathLike) -> str:
    """Writes the marker into an existing folder (adopting a run folder of an older gan_jax); returns its path."""
    path = resolve(workdir)
    root = epath.Path(path)
    if not root.is_dir():
        raise WorkdirError(f"{path} is not an existing folder")
    if not (root / MARKER).exists():
        _write_marker(path)
    return path


def read_holder(workdir: PathLike) -> Optional[dict[str, Any]]:
    """What the lock file says about its last holder (pid, host, started), or None if absent or unreadable."""
    try:
        return json.loads((as_path(workdir) / LOCK_FILE).read_text() or "null")
    except (OSError, ValueError):
        return None


class WorkdirLock:
    """The exclusive lock on one workdir; `held` is False on processes other than the writer, and on every process
    of a URL workdir (object storage has no flock)."""

    def __init__(self, workdir: str, fd: Optional[int]):
        self.workdir = workdir
        self.path = os.fspath(epath.Path(workdir) / LOCK_FILE)
        self._fd = fd

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Clears the holder record and releases the lock (idempotent; the kernel also releases it at exit)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor of the open file releases the flock

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"WorkdirLock({self.workdir!r}, held={self.held})"


def _describe(holder: Optional[dict[str, Any]]) -> str:
    if not holder:
        return "a process that has not yet written its name"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"running since {holder.get('started', '?')}")


def _lock(path: str) -> Optional[int]:
    """The descriptor holding the flock on `path`'s lock file; None for a URL (object storage, where no flock
    exists), after one warning line on stderr: the run goes on with nothing enforced."""
    if url_scheme(path):
        print(f"gan_jax: warning: --workdir {path} is object storage: one writer per workdir is not enforced there "
              "(no flock; see BUILD.md, Storage): run only one training per workdir at a time", file=sys.stderr)
        return None
    lock_path = os.path.join(path, LOCK_FILE)  # flock needs a file of the local (or a mounted) file system
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise WorkdirError(f"cannot open the lock file {lock_path} ({err.strerror}): --workdir {path} must be a "
                           "writable folder prepared with gan_jax.workdir.prepare") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise WorkdirLockedError(
                f"--workdir {path} is in use by another gan_jax run: {_describe(read_holder(path))} "
                f"(lock file {lock_path}). Wait for that run to finish or stop it, or choose another --workdir; "
                "the lock is released automatically when that process exits.") from err
        raise WorkdirError(f"cannot lock {lock_path} ({err.strerror}): the file system of --workdir {path} "
                           "does not support flock; choose a folder on a local disk or NFSv4") from err
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    except OSError as err:
        os.close(fd)
        raise WorkdirError(f"cannot write the lock file {lock_path} ({err.strerror})") from err
    return fd


def acquire(workdir: PathLike, *, is_writer: Optional[bool] = None) -> WorkdirLock:
    """Takes the workdir's exclusive lock (non-blocking) on the writer process; WorkdirLockedError names the holder.

    `is_writer` as in `prepare`. Non-writers get a lock object with `held == False`, and so does every process of
    a URL workdir (`_lock`); with several processes all raise when process 0 cannot take the lock. Release with
    `lock.release()` or a `with` block.
    """
    path = resolve(workdir)
    is_writer = _default_is_writer(is_writer)
    error: Optional[WorkdirError] = None
    fd = None
    if is_writer:
        try:
            fd = _lock(path)
        except WorkdirError as err:
            error = err
    lock = WorkdirLock(path, fd)
    if not _agree(error is None, is_writer):
        lock.release()
        raise error or WorkdirLockedError(f"--workdir {path}: process 0 could not take its lock (its error says why)")
    return lock


# ------------------------------------------------------------------------------------------------------------
# What is saved.


def committed_steps(directory: epath.Path) -> list[int]:
    """Step numbers of the committed step folders in an orbax checkpoint folder, newest first (OSError if it
    cannot be listed): orbax renames `<step>.orbax-checkpoint-tmp` to `<step>` on commit, or, on object storage
    (no renames), writes `<step>/commit_success.txt` last."""
    on_object_storage = url_scheme(directory) is not None
    return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()
                   and (not on_object_storage or (p / "commit_success.txt").exists())), reverse=True)


def saved_steps(workdir: PathLike) -> list[int]:
    """Steps of the complete checkpoints in `<workdir>/checkpoints`, newest first; [] if none or unreadable."""
    try:
        return committed_steps(as_path(workdir) / CHECKPOINTS)
    except OSError:
        return []
