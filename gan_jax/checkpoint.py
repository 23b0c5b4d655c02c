"""Checkpoints through orbax: the whole `TrainState`, the config (JSON) and the arrays' digests, together per step.

- Saves are asynchronous; the `max_to_keep` newest steps are kept. Every step carries a SHA-256 digest of each
  array leaf (keyed by its tree path, in the step's `digests` item), computed from the values being saved.
  Cost (`python benchmarks/checkpoint_digest.py`, 2-core AMD EPYC at load 5): 11-18 ms for the 12 MiB ring8
  width-512 Adam state, 6-8 % of a committed save; 2-3 ms for the 1.2 MiB digits conv state, about 1 %.
- `Checkpointer.restore_latest` takes the newest step that restores cleanly and whose arrays match their digests.
  A step that fails (truncated, corrupt, digest mismatch, non-finite) is never deleted: it is renamed to
  `<step>.corrupt` beside the others, with a warning naming it (and, for a mismatch, the array path).
  Steps written before digests existed restore with a warning that they could not be verified.
  If every step fails, `AllCheckpointsCorruptError` is raised: None ("start fresh") only when there was no step.
- A checkpoint written by a config whose state shapes differ (model, optimizer, data shape), or whose saved
  array paths/shapes/dtypes differ from the state being restored into, is refused with
  `IncompatibleCheckpointError`; nothing on disk changes.
- Temporary folders of unfinished saves (`*.orbax-checkpoint-tmp`) are removed only by a Checkpointer given the
  workdir lock (`gan_jax.workdir.acquire`): under the lock no other writer exists, so any such folder is a
  leftover of a dead run. Without the lock none are removed (orbax's own start-up cleanup would delete the
  folder of a save another process is writing at that moment). Orbax also replaces a leftover tmp folder of
  the very step it is saving; that too is safe only because the lock admits one writer per workdir.
- `restore_readonly` reads the newest valid committed step without creating, renaming or deleting anything and
  without a lock: safe in a notebook beside a live run.
- Multi-process: every process calls save/restore (collective); renames and deletions happen on process 0 only,
  followed by a barrier. All processes read the same files, so they reach the same verdict on each step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Union

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from gan_jax import config as config_lib
from gan_jax.engine import all_finite
from gan_jax.workdir import WorkdirLock

PyTree = Any
ConfigLike = Union[ml_collections.ConfigDict, dict]

DIGESTS_ITEM = "digests"
DIGEST_ALGORITHM = "sha256"
DIGEST_FORMAT = 1
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_READONLY_RESCANS = 5
_CORRUPT = re.compile(r"^(\d+)\.corrupt\d*$")


class IncompatibleCheckpointError(ValueError):
    """The workdir holds checkpoints of a differently shaped model or optimizer."""


class CorruptCheckpointError(ValueError):
    """A restored step does not match the digests saved with it, or is otherwise unusable."""


class AllCheckpointsCorruptError(ValueError):
    """Checkpoints exist but none restores: the run must not silently start fresh."""


class NoValidCheckpointError(ValueError):
    """`restore_readonly` found no committed step that restores cleanly."""


# ------------------------------------------------------------------------------------------------------------
# Digests.


def _host_bytes(leaf: Any) -> np.ndarray:
    """The leaf's values on this host as a C-contiguous array (PRNG keys as their key data)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError(f"cannot digest a sharded array of shape {leaf.shape} on one process; "
                             "checkpointed state must be fully replicated")
        leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(np.asarray(leaf)).reshape(-1).view(np.uint8)


def _leaf_spec(leaf: Any) -> tuple[str, list[int]]:
    """(dtype, shape) of the bytes digested for a leaf (array, ShapeDtypeStruct or scalar); keys as key data."""
    if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return str(dtype), [int(d) for d in np.shape(leaf)]


def state_digests(state: PyTree) -> dict[str, Any]:
    """{"arrays": {tree path: {"dtype", "shape", "sha256"}}, ...}: SHA-256 of each leaf's bytes (keys: key data)."""
    arrays = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        dtype, shape = _leaf_spec(leaf)
        arrays[jax.tree_util.keystr(path)] = {
            "dtype": dtype, "shape": shape, DIGEST_ALGORITHM: hashlib.sha256(_host_bytes(leaf)).hexdigest()}
    return {"format": DIGEST_FORMAT, "algorithm": DIGEST_ALGORITHM, "arrays": arrays}


def _digest_mismatches(state: PyTree, record: dict[str, Any]) -> list[str]:
    """Tree paths whose restored bytes differ from the saved digest."""
    now = state_digests(state)["arrays"]
    return [path for path, saved in record["arrays"].items()
            if path not in now or now[path][DIGEST_ALGORITHM] != saved[DIGEST_ALGORITHM]]


def _structure_differences(like: PyTree, record: dict[str, Any]) -> list[str]:
    """How the saved arrays (paths, shapes, dtypes) differ from the state to restore into."""
    like = {jax.tree_util.keystr(path): _leaf_spec(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(like)[0]}
    saved = {path: (entry["dtype"], [int(d) for d in entry["shape"]]) for path, entry in record["arrays"].items()}
    diffs = [f"{p}: saved, absent now" for p in sorted(set(saved) - set(like))]
    diffs += [f"{p}: absent in checkpoint" for p in sorted(set(like) - set(saved))]
    diffs += [f"{p}: {saved[p][0]}{saved[p][1]} saved, {like[p][0]}{like[p][1]} now"
              for p in sorted(set(saved) & set(like)) if saved[p] != like[p]]
    return diffs


# ------------------------------------------------------------------------------------------------------------
# Restoring one step (shared by the training Checkpointer and the read-only reader).


def _abstract(like: PyTree) -> PyTree:
    """ShapeDtypeStructs (with a sharding) for `like`'s arrays or ShapeDtypeStructs."""

    def one(leaf: Any) -> Any:
        struct = ocp.utils.to_shape_dtype_struct(leaf)
        if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
            struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype,
                                          sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        return struct

    return jax.tree.map(one, like)


# Reading a damaged array file, tensorstore's asyncio bridge prints "RuntimeError: Event loop is closed"
# tracebacks from its own threads (one per read still in flight when orbax gives up and closes its loop; printed
# by tensorstore's C++, so no Python hook sees them; seen with orbax-checkpoint 0.12.8 on a truncated file).
_TENSORSTORE_NOISE = ("Traceback (most recent call last):", "asyncio/base_events.py", "self._check_closed()",
                      "Event loop is closed")
_NOISE_SETTLE_S = 0.2  # reads in flight finish (and print) within this after a failed restore


@contextlib.contextmanager
def _without_tensorstore_noise():
    """Captures file descriptor 2 while a step is read and passes on every line but tensorstore's noise."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if failed:
                time.sleep(_NOISE_SETTLE_S)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(noise in line for noise in _TENSORSTORE_NOISE) and line.strip()]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


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


def _restore_step(read: Callable[..., Any], step: int, step_dir: str, like: PyTree, abstract: PyTree,
                  config: Optional[dict], directory: str) -> PyTree:
    """The state of one step, verified; IncompatibleCheckpointError as is, any other failure raised for quarantine.

    `read(**items)` restores the named items of the step's Composite and returns the result.
    """
    with _without_tensorstore_noise():
        return _verified_step(read, step, step_dir, like, abstract, config, directory)


def _verified_step(read: Callable[..., Any], step: int, step_dir: str, like: PyTree, abstract: PyTree,
                   config: Optional[dict], directory: str) -> PyTree:
    """`_restore_step`'s work."""
    saved_config = read(config=ocp.args.JsonRestore()).config
    if config is not None:
        diffs = config_lib.structural_differences(saved_config, config)
        if diffs:
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {directory} was written with a differently shaped "
                f"config: {'; '.join(diffs)}. Resume with the original values, or start the new config "
                "in a fresh --workdir. Nothing was changed on disk.")
    record = None
    if os.path.isdir(os.path.join(step_dir, DIGESTS_ITEM)):
        record = read(**{DIGESTS_ITEM: ocp.args.JsonRestore()})[DIGESTS_ITEM]
        if not isinstance(record, dict) or record.get("algorithm") != DIGEST_ALGORITHM:
            raise CorruptCheckpointError(f"unreadable digests record: {str(record)[:200]}")
        diffs = _structure_differences(like, record)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {directory} holds differently shaped arrays than the state to "
                f"restore into: {shown}. The code or config that builds the state changed; resume with the "
                "original one, or start in a fresh --workdir. Nothing was changed on disk.")
    else:
        logging.warning("checkpoint step %d in %s has no array digests (written by a gan_jax older than "
                        "checksummed checkpoints): restoring it unverified", step, directory)
    state = _restore_state(read, abstract)
    if record is not None:
        bad = _digest_mismatches(state, record)
        if bad:
            raise CorruptCheckpointError(
                f"array {bad[0]} does not match its saved {DIGEST_ALGORITHM} digest"
                + (f" (nor do {len(bad) - 1} more: {', '.join(bad[1:4])}{', ...' if len(bad) > 4 else ''})"
                   if len(bad) > 1 else ""))
    if not bool(all_finite(state)):
        raise CorruptCheckpointError("restored parameters are not finite")
    return state


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _corrupt_folders(directory: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if _CORRUPT.match(n))
    except OSError:
        return []


def _how_to_start_fresh(directory: str) -> str:
    return (f"To start fresh, use a new --workdir, or move {directory} away (or delete it) and rerun; "
            "to investigate, the folders are kept as they were found.")


# ------------------------------------------------------------------------------------------------------------
# The training run's checkpointer.


class Checkpointer:
    """Orbax `CheckpointManager` over `<workdir>/checkpoints`, one folder per step, the writer of one run.

    `lock`: the `gan_jax.workdir.acquire(workdir)` lock (process 0 holds it; other processes pass theirs or None).
    Only under a held lock are leftover `*.orbax-checkpoint-tmp` folders removed at start.
    """

    def __init__(self, workdir: str, cfg: ml_collections.ConfigDict, *, lock: Optional[WorkdirLock] = None):
        workdir = os.path.abspath(workdir)
        if lock is not None and lock.workdir != workdir:
            raise ValueError(f"the lock given is for {lock.workdir}, not for the workdir {workdir}")
        self.directory = os.path.join(workdir, "checkpoints")
        self._config = cfg.to_dict()
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.train.max_to_keep, create=True, cleanup_tmp_directories=False)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        if lock is not None and lock.held:
            self._remove_leftover_tmp_folders()
        _sync("gan_jax_checkpointer_start")

    def _remove_leftover_tmp_folders(self) -> None:
        for name in sorted(os.listdir(self.directory)):
            if _TMP_SUFFIX in name:
                path = os.path.join(self.directory, name)
                logging.warning("removing %s: an unfinished save of an earlier run (this run holds the "
                                "workdir lock, so no other process is writing it)", path)
                shutil.rmtree(path, ignore_errors=True)
        self._manager.reload()

    def save(self, state: PyTree) -> int:
        """Starts an asynchronous save of `state`, the config and the digests at `state.step`; returns the step."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return step
        self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self._config),
            **{DIGESTS_ITEM: ocp.args.JsonSave(state_digests(state))}))
        return step

    def wait(self) -> None:
        """Blocks until pending saves are committed on disk."""
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        """The newest committed step number, or None."""
        return self._manager.latest_step()

    def restore_latest(self, like: PyTree) -> Optional[PyTree]:
        """Newest verified state like `like`; None iff no step exists; AllCheckpointsCorruptError if none is valid."""
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            earlier = _corrupt_folders(self.directory)
            if earlier:
                raise AllCheckpointsCorruptError(
                    f"{self.directory} holds no valid checkpoint, only {len(earlier)} step(s) kept aside as "
                    f"corrupt by an earlier restore ({', '.join(earlier)}). gan_jax does not start fresh over "
                    f"them silently. {_how_to_start_fresh(self.directory)}")
            return None
        abstract = _abstract(like)
        for step in steps:
            step_dir = os.path.join(self.directory, str(step))
            read = lambda step=step, **items: self._manager.restore(step, args=ocp.args.Composite(**items))
            try:
                return _restore_step(read, step, step_dir, like, abstract, self._config, self.directory)
            except IncompatibleCheckpointError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure to read means this step is unusable
                self._quarantine(step, err)
        raise AllCheckpointsCorruptError(
            f"none of the {len(steps)} checkpoint step(s) in {self.directory} ({', '.join(map(str, steps))}) "
            "could be restored; all were kept aside as <step>.corrupt (the warnings above say why). gan_jax "
            f"does not start fresh silently. {_how_to_start_fresh(self.directory)}")

    def _quarantine(self, step: int, err: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = f"{src}.corrupt"
        suffix = 1
        while os.path.exists(dst):
            dst, suffix = f"{src}.corrupt{suffix}", suffix + 1
        _sync(f"gan_jax_quarantine_{step}_named")  # every process has chosen the same `dst`
        if jax.process_index() == 0:
            os.rename(src, dst)
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


def _committed_steps(directory: str) -> list[int]:
    """Step numbers of finalised step folders (orbax renames `<step>.orbax-checkpoint-tmp` to `<step>` on commit)."""
    steps = []
    for name in os.listdir(directory):
        if name.isdigit() and os.path.isdir(os.path.join(directory, name)):
            steps.append(int(name))
    return sorted(steps, reverse=True)


def restore_readonly(path: str, like: PyTree, config: Optional[ConfigLike] = None) -> tuple[int, PyTree]:
    """(step, state) of the newest committed valid step; writes nothing, no lock; NoValidCheckpointError if none.

    `path`: a workdir or its `checkpoints` folder. `like`: a state (or ShapeDtypeStructs) giving structure,
    dtypes and shardings. `config`: when given, a checkpoint of a differently shaped config raises
    IncompatibleCheckpointError. Unfinished saves are ignored; failing steps are skipped (not renamed).
    """
    path = os.path.abspath(path)
    directory = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    if not os.path.isdir(directory):
        raise NoValidCheckpointError(f"no checkpoints at {path}: expected a workdir or its checkpoints folder")
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    abstract = _abstract(like)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as reader:
        # A live run deletes its oldest steps as it saves new ones; when every step listed was deleted while
        # being read, the listing is taken again (newer steps have been committed meanwhile).
        for _ in range(_READONLY_RESCANS):
            steps, skipped, deleted = _committed_steps(directory), [], 0
            for step in steps:
                step_dir = os.path.join(directory, str(step))
                read = lambda step_dir=step_dir, **items: reader.restore(step_dir, args=ocp.args.Composite(**items))
                try:
                    return step, _restore_step(read, step, step_dir, like, abstract, config, directory)
                except IncompatibleCheckpointError:
                    raise
                except Exception as err:  # noqa: BLE001 - unusable step: skip it, change nothing
                    if not os.path.isdir(step_dir):
                        reason = "deleted while being read (the live run keeps only its newest steps)"
                        deleted += 1
                    else:
                        reason = f"{type(err).__name__}: {err}"
                    skipped.append(f"{step} ({reason})")
                    logging.warning("checkpoint step %d in %s skipped (%s); left as it is, trying older steps",
                                    step, directory, reason)
            if deleted < len(steps) or not steps:
                break
    if not steps:
        raise NoValidCheckpointError(f"no committed checkpoint in {directory} (unfinished saves are ignored)")
    raise NoValidCheckpointError(f"none of the {len(steps)} committed checkpoint step(s) in {directory} could be "
                                 f"restored: {'; '.join(skipped)}. Nothing was changed on disk.")
