"""Checkpoints through orbax: the whole `TrainState`, the config (JSON) and the arrays' digests, together per step.

- Saves are asynchronous; the `max_to_keep` newest steps are kept. Every step carries a SHA-256 digest of each
  shard that each process saves (keyed by the array's tree path and the shard's region of the global array, in
  the step's `digests` item: one `process_<i>.json` per process), so states sharded over devices and processes
  are covered. The hashing is off the loop's path: `save` only takes this process's host views of its shards
  (zero-copy on the CPU backend; on an accelerator a device-to-host copy, started before orbax's own and
  running beside it), and the hashes are computed and written in orbax's background commit once `save` has
  returned; orbax publishes the step only when they are on disk. A step is therefore committed with its
  complete digests or not at all (an interrupted save stays an unfinished save). Blocking time of a save,
  gan_jax / orbax alone (`python benchmarks/checkpoint_digest.py`, results/checkpoint_digest.md: 2-core AMD
  EPYC, load 1.5, medians of 100 interleaved saves, 2026-12-07): 1.09x wall clock (9.1 -> 10.0 ms) and 1.11x
  main-thread CPU (6.4 -> 7.1 ms) for the 12 MiB ring8 width-512 Adam state, 1.04x and 1.08x for the 1.2 MiB
  digits conv state (six more runs that day, 60-100 saves each, wall clock: 1.03-1.11x and 1.04-1.15x); hashing
  them before the save, as gan_jax did until issue 24, blocked for 26 and 3.8 ms more.
- `Checkpointer.restore_latest` takes the newest step that restores cleanly and whose arrays match their digests,
  into the shardings of the `like` state on every process (each process checks the saved regions it holds; all
  processes reach one verdict). A step is renamed to `<step>.corrupt` (never deleted), with a warning naming it,
  only on proof that its files are damaged: a digest mismatch (the message names the array and, for a sharded
  one, the region), non-finite parameters, unreadable or missing metadata, missing or truncated array files.
  Any other failure (too few file descriptors, permission denied, memory exhausted on host or device, an I/O
  error or timeout of the storage, an error this module does not recognise) raises `CheckpointReadError`: one
  line naming the step, the error and what to do; nothing on disk changes, and the next run resumes from that
  step once the cause is gone. Steps written before digests existed restore with a warning that they could not
  be verified. If every step is damaged, `AllCheckpointsCorruptError` is raised: None ("start fresh") only when
  there was no step.
- A checkpoint written by a config whose state shapes differ (model, optimizer, data shape), or whose saved
  array paths/shapes/dtypes differ from the state being restored into, is refused with
  `IncompatibleCheckpointError`; nothing on disk changes.
- Temporary folders of unfinished saves (`*.orbax-checkpoint-tmp`) are removed only by a Checkpointer given the
  workdir lock (`gan_jax.workdir.acquire`): under the lock no other writer exists, so any such folder is a
  leftover of a dead run. Without the lock none are removed (orbax's own start-up cleanup would delete the
  folder of a save another process is writing at that moment). Orbax also replaces a leftover tmp folder of
  the very step it is saving; that too is safe only because the lock admits one writer per workdir.
- `restore_readonly` reads the newest valid committed step (or a given one) without creating, renaming or
  deleting anything and without a lock: safe in a notebook beside a live run.
- Paths are `etils.epath` paths (orbax's own type, made by `gan_jax.workdir.as_path`): a `gs://...` workdir works
  where its file-system support is installed. What is safe on which storage (renames, the workdir lock) is
  stated in BUILD.md.
- Multi-process: every process calls save/restore (collective); renames and deletions happen on process 0 only,
  followed by a barrier.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Optional, Union

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from gan_jax import config as config_lib
from gan_jax.checkpoint_digests import (DIGEST_ALGORITHM, DIGESTS_ITEM, DigestsRestore, DigestsSave, host_check,
                                        shards_to_save, structure_differences)
from gan_jax.checkpoint_failures import (AllCheckpointsCorruptError, CheckpointReadError, CorruptCheckpointError,
                                         IncompatibleCheckpointError, NoValidCheckpointError, agree_on_failure,
                                         classified, error_chain, gather)
from gan_jax.workdir import PathLike, WorkdirLock, as_path, committed_steps

PyTree = Any
ConfigLike = Union[ml_collections.ConfigDict, dict]

_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_READONLY_RESCANS = 5
_CORRUPT = re.compile(r"^(\d+)\.corrupt\d*$")


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------------------------------------
# Restoring one step (shared by the training Checkpointer and the read-only reader).


def _abstract(like: PyTree) -> PyTree:
    """ShapeDtypeStructs carrying `like`'s shardings; a leaf without one goes to this process's first device."""
    device = jax.local_devices()[0]

    def one(leaf: Any) -> Any:
        struct = ocp.utils.to_shape_dtype_struct(leaf)
        if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
            struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype,
                                          sharding=jax.sharding.SingleDeviceSharding(device))
        return struct

    return jax.tree.map(one, like)


# What orbax's and tensorstore's threads print while a step is read: reading a damaged array file,
# tensorstore's asyncio bridge prints "RuntimeError: Event loop is closed" tracebacks (one per read still in
# flight when orbax gives up and closes its loop; printed by tensorstore's C++, so no Python hook sees them);
# out of file descriptors or memory, orbax leaves half-built asyncio loops and coroutines whose clean-up prints
# "Exception ignored in: ..." tracebacks (with multi-line TensorStore specs) and RuntimeWarnings whenever they
# are collected (all seen with orbax-checkpoint 0.12.8).
_TRACEBACK_STARTS = ("Traceback (most recent call last):", "Exception ignored in:")
_NOISE_SETTLE_S = 0.2  # reads in flight finish (and print) within this after a failed restore


def _without_tracebacks(text: str) -> str:
    """`text` less its traceback blocks (the start line, the indented lines, the exception's line)."""
    kept, in_traceback = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(_TRACEBACK_STARTS):
            in_traceback = True
        elif in_traceback:
            in_traceback = line.startswith((" ", "\t"))
        elif line.strip():
            kept.append(line)
    return "".join(kept)


def _read_quietly(read_step: Callable[[], Any]) -> Any:
    """`read_step()` with file descriptor 2 captured. On success, what was printed is passed on less tracebacks;
    on failure nothing is (the exception says what failed), and what the failed read left behind is collected
    first, while the capture lasts, so that it cannot print later (its frames' locals are cleared; the
    tracebacks themselves are kept)."""
    try:
        saved = os.dup(2)
    except OSError as err:
        if err.errno != errno.EBADF:
            raise
        return read_step()  # no stderr to protect
    try:
        with tempfile.TemporaryFile(mode="w+b") as capture:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            try:
                result = read_step()
            except BaseException as err:
                for e in error_chain(err):
                    traceback.clear_frames(e.__traceback__)
                time.sleep(_NOISE_SETTLE_S)
                gc.collect()
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(_without_tracebacks(capture.read().decode(errors="replace")))
            sys.stderr.flush()
            return result
    finally:
        os.close(saved)


def _restore_state(read: Callable[..., Any], abstract: PyTree) -> PyTree:
    """The step's state restored into `abstract`; a state saved before one of its fields existed is migrated.

    A field that is empty in `abstract` (e.g. `generator_state` = {} for a generator without batch norm, added
    to TrainState after checkpoints existed) and absent from the saved tree holds no array either way: the
    state is restored without it and the field set back to {}. Anything else absent is an error, as before.
    """
    try:
        return read(state=ocp.args.StandardRestore(abstract)).state
    except ValueError as err:
        text = str(err)
        if not dataclasses.is_dataclass(abstract) or "tree structures do not match" not in text:
            raise
        added = [f.name for f in dataclasses.fields(abstract)
                 if getattr(abstract, f.name) == {} and re.search(rf"^{f.name}:\n\s*- Source: .*\n\s*- Target: MISSING", text, re.M)]
        if not added:
            raise
        older = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract) if f.name not in added}
        restored = read(state=ocp.args.StandardRestore(older)).state
        return abstract.replace(**restored, **{name: {} for name in added})


def _restore_step(read: Callable[..., Any], step: int, step_dir: epath.Path, like: PyTree, abstract: PyTree,
                  config: Optional[dict], directory: str, then: str) -> PyTree:
    """The verified state of one step, with one verdict over all processes.

    `read(**items)` restores the named items of the step's Composite. Raises IncompatibleCheckpointError,
    CorruptCheckpointError (proven damage) or CheckpointReadError (anything else; `then` ends its message).
    """
    failure, cause = None, None
    try:
        state, checked, saved = _read_quietly(
            lambda: _verified_step(read, step, step_dir, like, abstract, config, directory))
    except IncompatibleCheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - sorted into proven damage and everything else
        failure, cause = classified(err, step, step_dir, directory, then), err
    failure = agree_on_failure(failure, step, directory)
    if failure is not None:
        raise failure from cause
    checked = sum(gather(checked))
    if checked < saved:
        logging.warning("checkpoint step %d in %s: %d of its %d saved array regions could not be verified (the state "
                        "is restored with a finer sharding than it was saved with)", step, directory,
                        saved - checked, saved)
    return state


def _verified_step(read: Callable[..., Any], step: int, step_dir: epath.Path, like: PyTree, abstract: PyTree,
                   config: Optional[dict], directory: str) -> tuple[PyTree, int, int]:
    """(state, saved regions checked by this process, saved regions) of one step; raises what this process finds."""
    saved_config = read(config=ocp.args.JsonRestore()).config
    if config is not None:
        diffs = config_lib.structural_differences(saved_config, config)
        if diffs:
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {directory} was written with a differently shaped "
                f"config: {'; '.join(diffs)}. Resume with the original values, or start the new config "
                "in a fresh --workdir. Nothing was changed on disk.")
    record = None
    if (step_dir / DIGESTS_ITEM).is_dir():
        record = read(**{DIGESTS_ITEM: DigestsRestore()})[DIGESTS_ITEM]
        diffs = structure_differences(like, record)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {directory} holds differently shaped arrays than the state to "
                f"restore into: {shown}. The code or config that builds the state changed; resume with the "
                "original one, or start in a fresh --workdir. Nothing was changed on disk.")
    else:
        logging.warning("checkpoint step %d in %s has no array digests (written by a gan_jax older than "
                        "checksummed checkpoints): restoring it unverified", step, directory)
    if not (step_dir / "state" / "_METADATA").exists():  # orbax would report a confusing tree mismatch
        raise CorruptCheckpointError("state/_METADATA (the saved tree's metadata) is missing")
    state = _restore_state(read, abstract)
    bad, nonfinite, checked = host_check(state, record)
    if bad:
        raise CorruptCheckpointError(
            f"array {bad[0]} does not match its saved {DIGEST_ALGORITHM} digest"
            + (f" (nor do {len(bad) - 1} more: {', '.join(bad[1:4])}{', ...' if len(bad) > 4 else ''})"
               if len(bad) > 1 else ""))
    if nonfinite:
        raise CorruptCheckpointError("restored parameters are not finite")
    saved = 0 if record is None else sum(len(entry["shards"]) for entry in record["arrays"].values())
    return state, checked, saved


def _corrupt_folders(directory: epath.Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if _CORRUPT.match(p.name))
    except OSError:
        return []


def _how_to_start_fresh(directory: str) -> str:
    return (f"To start fresh, use a new --workdir, or move {directory} away (or delete it) and rerun; "
            "to investigate, the folders are kept as they were found.")


# ------------------------------------------------------------------------------------------------------------
# The training run's checkpointer.


class Checkpointer:
    """Orbax `CheckpointManager` over `<workdir>/checkpoints`, one folder per step, the writer of one run.

    `workdir`: a local path or a URL orbax's epath supports (gs://...). `lock`: the `gan_jax.workdir.acquire(
    workdir)` lock (process 0 holds it; other processes pass theirs or None). Only under a held lock are leftover
    `*.orbax-checkpoint-tmp` folders removed at start.
    """

    def __init__(self, workdir: PathLike, cfg: ml_collections.ConfigDict, *, lock: Optional[WorkdirLock] = None):
        root = as_path(workdir)
        if lock is not None and lock.workdir != os.fspath(root):
            raise ValueError(f"the lock given is for {lock.workdir}, not for the workdir {root}")
        self._path = root / "checkpoints"
        self.directory = os.fspath(self._path)
        self._config = cfg.to_dict()
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.train.max_to_keep, create=True, cleanup_tmp_directories=False)
        self._manager = ocp.CheckpointManager(self._path, options=self._options)
        if lock is not None and lock.held:
            self._remove_leftover_tmp_folders()
        _sync("gan_jax_checkpointer_start")

    def _remove_leftover_tmp_folders(self) -> None:
        for path in sorted(self._path.iterdir()):
            if _TMP_SUFFIX in path.name:
                logging.warning("removing %s: an unfinished save of an earlier run (this run holds the "
                                "workdir lock, so no other process is writing it)", path)
                try:
                    path.rmtree()
                except OSError as err:
                    logging.warning("could not remove %s (%s); orbax replaces it if it saves that step again",
                                    path, err)
        self._manager.reload()

    def save(self, state: PyTree) -> int:
        """Starts an asynchronous save of `state`, the config and the shard digests at `state.step`; returns the step.

        Blocks while orbax and the digests take this process's host copies; the hashes are computed and written
        in orbax's background commit, which publishes the step only when they and the arrays are on disk.
        """
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return step
        released = threading.Event()
        try:
            self._manager.save(step, force=True, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self._config),
                **{DIGESTS_ITEM: DigestsSave(shards_to_save(state), released)}))
        finally:
            released.set()
        return step

    def wait(self) -> None:
        """Blocks until pending saves are committed on disk."""
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        """The newest committed step number, or None."""
        return self._manager.latest_step()

    def restore_latest(self, like: PyTree) -> Optional[PyTree]:
        """Newest verified state like `like` (its shardings); None iff no step exists.

        Raises AllCheckpointsCorruptError if every step is damaged, CheckpointReadError (nothing changed) if a
        step cannot be read for another reason, IncompatibleCheckpointError for a differently shaped state.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            earlier = _corrupt_folders(self._path)
            if earlier:
                raise AllCheckpointsCorruptError(
                    f"{self.directory} holds no valid checkpoint, only {len(earlier)} step(s) kept aside as "
                    f"corrupt by an earlier restore ({', '.join(earlier)}). gan_jax does not start fresh over "
                    f"them silently. {_how_to_start_fresh(self.directory)}")
            return None
        abstract = _abstract(like)
        for step in steps:
            read = lambda step=step, **items: self._manager.restore(step, args=ocp.args.Composite(**items))
            try:
                return _restore_step(read, step, self._path / str(step), like, abstract, self._config,
                                     self.directory, then=f"rerun: it resumes from step {step}.")
            except CorruptCheckpointError as err:
                self._quarantine(step, err)
        raise AllCheckpointsCorruptError(
            f"none of the {len(steps)} checkpoint step(s) in {self.directory} ({', '.join(map(str, steps))}) "
            "could be restored; all were kept aside as <step>.corrupt (the warnings above say why). gan_jax "
            f"does not start fresh silently. {_how_to_start_fresh(self.directory)}")

    def _quarantine(self, step: int, err: Exception) -> None:
        src = self._path / str(step)
        dst = src.with_name(f"{step}.corrupt")
        suffix = 1
        while dst.exists():
            dst, suffix = src.with_name(f"{step}.corrupt{suffix}"), suffix + 1
        _sync(f"gan_jax_quarantine_{step}_named")  # every process has chosen the same `dst`
        if jax.process_index() == 0:
            src.rename(dst)
        _sync(f"gan_jax_quarantine_{step}")
        logging.warning("checkpoint step %d could not be restored (%s: %s); kept aside as %s, trying older steps",
                        step, type(err).__name__, err, dst)
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()


# ------------------------------------------------------------------------------------------------------------
# Read-only restore (notebooks, evaluation).


def restore_readonly(path: PathLike, like: PyTree, config: Optional[ConfigLike] = None, *,
                     step: Optional[int] = None) -> tuple[int, PyTree]:
    """(step, state) of the newest committed valid step (or of `step`); writes nothing, takes no lock.

    `path`: a workdir or its `checkpoints` folder (local or a URL epath supports). `like`: a state (or
    ShapeDtypeStructs) giving structure, dtypes and shardings. `config`: when given, a checkpoint of a
    differently shaped config raises IncompatibleCheckpointError. Unfinished saves are ignored; damaged steps
    are skipped (not renamed); NoValidCheckpointError if none is left, CheckpointReadError if a step cannot be
    read for a reason that says nothing about its files.
    """
    path = as_path(path)
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not directory.is_dir():
        raise NoValidCheckpointError(f"no checkpoints at {path}: expected a workdir or its checkpoints folder")
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    abstract = _abstract(like)
    wanted = "committed checkpoint" if step is None else f"committed checkpoint of step {step}"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as reader:
        # A live run deletes its oldest steps as it saves new ones; when every step listed was deleted while
        # being read, the listing is taken again (newer steps have been committed meanwhile).
        for _ in range(_READONLY_RESCANS):
            steps = [s for s in committed_steps(directory) if step is None or s == step]
            skipped, deleted = [], 0
            for number in steps:
                step_dir = directory / str(number)
                read = lambda step_dir=step_dir, **items: reader.restore(step_dir, args=ocp.args.Composite(**items))
                try:
                    return number, _restore_step(read, number, step_dir, like, abstract, config,
                                                 os.fspath(directory), then="retry.")
                except (CorruptCheckpointError, CheckpointReadError) as err:
                    if step_dir.is_dir() and isinstance(err, CheckpointReadError):
                        raise
                    if not step_dir.is_dir():
                        reason = "deleted while being read (the live run keeps only its newest steps)"
                        deleted += 1
                    else:
                        reason = f"{type(err).__name__}: {err}"
                    skipped.append(f"{number} ({reason})")
                    logging.warning("checkpoint step %d in %s skipped (%s); left as it is, trying older steps",
                                    number, directory, reason)
            if deleted < len(steps) or not steps:
                break
    if not steps:
        committed = ", ".join(map(str, committed_steps(directory))) or "none"
        raise NoValidCheckpointError(f"no {wanted} in {directory} (unfinished saves are ignored); committed steps: "
                                     f"{committed}")
    raise NoValidCheckpointError(f"none of the {len(steps)} committed checkpoint step(s) in {directory} could be "
                                 f"restored: {'; '.join(skipped)}. Nothing was changed on disk.")
