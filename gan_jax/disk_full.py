"""A full disk while a run writes: `disk_full_as_error(workdir, state_bytes)` turns an exception caused by it into
one `DiskFullError` naming the newest complete checkpoint and the space a checkpoint takes; the error records orbax's
threads log about it are dropped (the same error reaches the main thread, which reports it once), and so are the
completions of writes still in flight when orbax closed the failed save's event loop (each printed a traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
from typing import Iterator, Optional

from gan_jax.errors import GanJaxError
from gan_jax.workdir import CHECKPOINTS, PathLike, WorkdirError, as_path, saved_steps


class DiskFullError(WorkdirError):
    """The disk of the workdir filled up while the run wrote to it."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _full_disk_code(text: str, error_number: Optional[int] = None) -> Optional[int]:
    """ENOSPC or EDQUOT if `error_number` is one or `text` holds its message (tensorstore's errors carry only the
    text: "... No space left on device [os_error_code='28']"), else None."""
    for code in _DISK_FULL:
        if error_number == code or os.strerror(code) in text:
            return code
    return None


def _disk_full_cause(err: Optional[BaseException]) -> Optional[int]:
    """`_full_disk_code` of `err` or of an exception it was raised from or while handling."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = _full_disk_code(str(err), getattr(err, "errno", None))
        if code is not None:
            return code
        err = err.__cause__ or err.__context__
    return None


def _disk_bytes(folder: str) -> int:
    """Bytes the local `folder` and everything in it take on disk (allocated blocks, as `du` counts them)."""
    total = 0
    for root, _, files in os.walk(folder):
        for path in (root, *(os.path.join(root, name) for name in files)):
            try:
                total += os.lstat(path).st_blocks * 512
            except OSError:
                pass
    return total


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # not reached


def _disk_full_error(workdir: str, code: int, state_bytes: int) -> DiskFullError:
    """The one-line account of a full disk: the newest complete checkpoint, what a checkpoint takes, what is free."""
    directory = os.path.join(workdir, CHECKPOINTS)
    steps = saved_steps(workdir)
    if steps:
        need = max(_disk_bytes(os.path.join(directory, str(step))) for step in steps)
        saved = (f"checkpoint step {steps[0]} in {directory} is complete and safe (the rerun resumes from it); "
                 f"a checkpoint takes about {_size(need)} there (the largest saved step)")
    else:
        saved = (f"no checkpoint was completed in {directory} (the rerun starts from step 0); a checkpoint holds "
                 f"the state's {_size(state_bytes)} of arrays and its metadata files")
    try:
        free = f"{_size(shutil.disk_usage(workdir).free)} are free"
    except OSError:
        free = "the free space is unknown"
    return DiskFullError(f"the disk of --workdir {workdir} is full ({os.strerror(code)}): {saved}, and {free}. "
                         "Free some space (the unfinished save's folder is removed when the run restarts) or move "
                         "the workdir to a larger disk, then rerun the same command.")


class _LoopIgnoringLateCallbacks(asyncio.SelectorEventLoop):
    """An event loop that drops callbacks posted after it closed: when one of orbax's writes fails, orbax closes
    its save's loop while tensorstore's other writes are in flight, and each of those that finishes later posts
    its completion to the closed loop; tensorstore prints that RuntimeError's traceback straight to stderr."""

    def call_soon_threadsafe(self, callback, *args, context=None):
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if not self.is_closed():
                raise
            return None


class _LoopsIgnoringLateCallbacks(asyncio.DefaultEventLoopPolicy):
    """The default policy, making `_LoopIgnoringLateCallbacks` loops."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _LoopIgnoringLateCallbacks()


class _DropDiskFullRecords(logging.Filter):
    """Drops log records about a full disk: orbax's save threads log the error they then raise in the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        return _disk_full_cause(err) is None and _full_disk_code(record.getMessage()) is None


@contextlib.contextmanager
def disk_full_as_error(workdir: PathLike, state_bytes: int) -> Iterator[None]:
    """Inside, an exception caused by a full disk is raised again as a one-line DiskFullError, and log records
    about a full disk are dropped (orbax logs the traceback of each save thread that fails; the main thread gets
    the same error at the next save or wait).

    `state_bytes`: the bytes of the state's arrays, the size estimate when no checkpoint is on disk yet.
    """
    quiet = _DropDiskFullRecords()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    for logger in loggers:
        logger.addFilter(quiet)
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_LoopsIgnoringLateCallbacks())
    try:
        yield
    except Exception as err:
        code = _disk_full_cause(err)
        if code is None or isinstance(err, GanJaxError):
            raise
        raise _disk_full_error(os.fspath(as_path(workdir)), code, state_bytes) from err
    finally:
        asyncio.set_event_loop_policy(policy)
        for logger in loggers:
            logger.removeFilter(quiet)
