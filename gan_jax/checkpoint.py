"""Checkpoints through orbax: the whole `TrainState` and the config (JSON) saved together, per step.

- Saves are asynchronous; `max_to_keep` newest steps are kept; unfinished temporary folders are cleaned.
- `restore_latest` takes the newest step that restores cleanly. A step that fails to restore (truncated,
  corrupt) is never deleted: it is renamed to `<step>.corrupt` beside the others, with a warning naming it.
- A checkpoint written by a config whose state shapes differ (model, optimizer, data shape) is refused
  with an error listing the differing keys; nothing on disk changes.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from gan_jax import config as config_lib

PyTree = Any


class IncompatibleCheckpointError(ValueError):
    """The workdir holds checkpoints of a differently shaped model or optimizer."""


class Checkpointer:
    """Orbax `CheckpointManager` over `<workdir>/checkpoints`, one folder per step."""

    def __init__(self, workdir: str, cfg: ml_collections.ConfigDict):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._config = cfg.to_dict()
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.train.max_to_keep, create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def save(self, state: PyTree) -> int:
        """Starts an asynchronous save of `state` (and the config) at `state.step`; returns the step."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return step
        self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self._config)))
        return step

    def wait(self) -> None:
        """Blocks until pending saves are committed on disk."""
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def restore_latest(self, like: PyTree) -> Optional[PyTree]:
        """The newest checkpoint that restores cleanly into the structure of `like`, or None if there is none."""
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                saved_config = self._manager.restore(
                    step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
            except Exception as err:  # noqa: BLE001 - any failure to read means this step is unusable
                self._quarantine(step, err)
                continue
            self._check_compatible(step, saved_config)
            try:
                abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
                state = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
                if not _all_finite(state):
                    raise ValueError("restored parameters are not finite")
            except IncompatibleCheckpointError:
                raise
            except Exception as err:  # noqa: BLE001
                self._quarantine(step, err)
                continue
            return state
        return None

    def _check_compatible(self, step: int, saved_config: dict) -> None:
        diffs = config_lib.structural_differences(saved_config, self._config)
        if diffs:
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} in {self.directory} was written with a differently shaped "
                f"config: {'; '.join(diffs)}. Resume with the original values, or start the new config "
                "in a fresh --workdir. Nothing was changed on disk.")

    def _quarantine(self, step: int, err: Exception) -> None:
        src = os.path.join(self.directory, str(step))
        dst = f"{src}.corrupt"
        suffix = 1
        while os.path.exists(dst):
            dst, suffix = f"{src}.corrupt{suffix}", suffix + 1
        os.rename(src, dst)
        logging.warning("checkpoint step %d could not be restored (%s: %s); kept aside as %s, trying older steps",
                        step, type(err).__name__, err, dst)
        self._manager.reload()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _all_finite(tree: PyTree) -> bool:
    arrays = [leaf for leaf in jax.tree.leaves(tree)
              if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
    return all(bool(jnp.all(jnp.isfinite(a))) for a in arrays if jnp.issubdtype(a.dtype, jnp.floating))
