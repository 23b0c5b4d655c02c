"""Why a checkpoint step could not be read: the error classes, and proven damage (the files hold something wrong
or miss something) told apart from everything else (the process's limits, permissions, memory, the storage
answering), which says nothing about the files. All processes act on one verdict."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
from typing import Iterator, Optional

import jax
import numpy as np
from etils import epath

from gan_jax.errors import GanJaxError


class IncompatibleCheckpointError(GanJaxError):
    """The workdir holds checkpoints of a differently shaped model or optimizer."""


class CorruptCheckpointError(GanJaxError):
    """A restored step does not match the digests saved with it, or is otherwise proven damaged."""


class AllCheckpointsCorruptError(GanJaxError):
    """Checkpoints exist but none restores: the run must not silently start fresh."""


class NoValidCheckpointError(GanJaxError):
    """`restore_readonly` found no committed step that restores cleanly."""


class CheckpointReadError(GanJaxError):
    """A step could not be read for a reason that says nothing about its files; nothing on disk was changed."""



# TensorStore reports missing, truncated and undecodable data as a ValueError "<status>: ..." with these codes
# (seen with orbax-checkpoint 0.12.8 on deleted, truncated and overwritten array files and manifests).
_DAMAGE_STATUS = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "FAILED_PRECONDITION")
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)|\[OS error (\d+)|\[Errno (\d+)\]")
_MEMORY_TEXT = ("RESOURCE_EXHAUSTED", "out of memory", "bad_alloc", "can't start new thread", "cannot allocate memory")
_STORAGE_TEXT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED", "UNAUTHENTICATED")


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """`err` and the errors it was raised from or during, outermost first."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _os_errno(err: BaseException) -> Optional[int]:
    """The OS error number of an OSError, or the one TensorStore quotes in its message."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno
    match = _OS_ERROR_CODE.search(str(err))
    return int(next(g for g in match.groups() if g)) if match else None


def _environment_kind(err: BaseException) -> Optional[str]:
    """"files", "permission", "memory", "device" or "storage" when `err` is about the environment, else None."""
    code, text = _os_errno(err), str(err)
    if code in (errno.EMFILE, errno.ENFILE):
        return "files"
    if code in (errno.EACCES, errno.EPERM) or "PERMISSION_DENIED" in text:
        return "permission"
    if (code == errno.ENOMEM or isinstance(err, MemoryError)
            or any(t.lower() in text.lower() for t in _MEMORY_TEXT)):
        return "memory"
    if isinstance(err, jax.errors.JaxRuntimeError):
        return "device"
    if (isinstance(err, TimeoutError) or (code is not None and code != errno.ENOENT)
            or any(text.startswith(t) for t in _STORAGE_TEXT)):
        return "storage"
    return None


def _is_damage(err: BaseException, step_dir: epath.Path) -> bool:
    """Whether `err` says the step's content is wrong: a digest mismatch, undecodable metadata, a file missing
    from the step, or TensorStore's missing/truncated/undecodable data."""
    return (isinstance(err, (CorruptCheckpointError, json.JSONDecodeError, UnicodeDecodeError))
            or (isinstance(err, FileNotFoundError) and os.fspath(step_dir) in str(err))
            or (type(err) is ValueError and str(err).startswith(_DAMAGE_STATUS)))


def _access_problem(folder: epath.Path) -> Optional[OSError]:
    """The first error (other than "no such file") met listing `folder`'s tree and opening each of its files."""
    try:
        for child in sorted(folder.iterdir()):
            if child.is_dir():
                problem = _access_problem(child)
                if problem is not None:
                    return problem
            else:
                with child.open("rb"):
                    pass
    except OSError as err:
        return None if err.errno == errno.ENOENT else err
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _what_to_do(kind: Optional[str], step_dir: epath.Path, directory: str) -> str:
    if kind == "files":
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"Raise the open-file limit (now {soft}; e.g. `ulimit -n {max(4096, 4 * soft)}`)"
    if kind == "permission":
        return f"Give the user running gan_jax read access to every file under {step_dir}"
    if kind == "memory":
        return ("Free host or device memory, or restore where the state fits (the address-space limit `ulimit -v`, "
                "the container's memory limit and the accelerator's memory each bound it)")
    if kind == "device":
        return "Check the accelerator (the error comes from it, not from the files)"
    if kind == "storage":
        return f"Check that the storage holding {directory} is reachable and reads back (a network mount or bucket)"
    return (f"Fix its cause; if you know the step is damaged, move it aside ({step_dir} -> {step_dir}.corrupt) to "
            "use the one before")


def classified(err: Exception, step: int, step_dir: epath.Path, directory: str, then: str) -> GanJaxError:
    """CorruptCheckpointError when `err` proves the step damaged, else CheckpointReadError (one line: what to do).

    Proof needs a damage signal in the error's chain, no environment error in it, and every file of the step
    readable (a permission problem can look like missing metadata to orbax).
    """
    errors = list(error_chain(err))
    environment = next((e for e in errors if _environment_kind(e)), None) or _access_problem(step_dir)
    if environment is None:
        damage = next((e for e in errors if _is_damage(e, step_dir)), None)
        if isinstance(damage, CorruptCheckpointError):
            return damage
        if damage is not None:
            return CorruptCheckpointError(_one_line(damage))
    cause = environment or err
    kind = _environment_kind(cause)
    return CheckpointReadError(
        f"checkpoint step {step} in {directory} could not be read ({_one_line(cause)}); this "
        f"{'says nothing about its files' if kind else 'does not prove its files damaged'}, so nothing was renamed "
        f"or deleted. {_what_to_do(kind, step_dir, directory)}, then {then}")


def gather(value: int) -> list[int]:
    """`value` of every process, in process order (a collective when there are several processes)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value))).reshape(-1)]


def agree_on_failure(failure: Optional[GanJaxError], step: int, directory: str) -> Optional[GanJaxError]:
    """The failure every process acts on: the gravest one of any process (read error > damage > none)."""
    grade = lambda f: 0 if f is None else 1 if isinstance(f, CorruptCheckpointError) else 2
    grades = gather(grade(failure))
    worst = max(grades)
    if worst == grade(failure):
        return failure
    other = grades.index(worst)
    if worst == 1:
        return CorruptCheckpointError(f"process {other} found it damaged (its warning names what)")
    return CheckpointReadError(f"checkpoint step {step} in {directory} could not be read on process {other} (its "
                               "error says why, and what to do); nothing was renamed or deleted")
