"""What a run writes beside its checkpoints, and the checks on it at resume: metrics.jsonl (+ TensorBoard events),
config.json and config_history/<step>.json (each segment's config, recorded by the trainer once the segment's
first checkpoint is on disk), and the list of settings a resumed segment changed. Used by gan_jax.trainer; only
process 0 calls the writers.
"""

from __future__ import annotations

import json
import os
import sys

import ml_collections

from gan_jax import checkpoint
from gan_jax import config as config_lib
from gan_jax.errors import GanJaxError


class MetricsLog:
    """metrics.jsonl plus TensorBoard events; on resume, entries after the restored step are dropped."""

    def __init__(self, workdir: str, resume_step: int):
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [line for line in self._read_lines() if json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1)

    def _read_lines(self) -> list[str]:
        """The file's lines, each checked to be a JSON object with a step; GanJaxError naming the line."""
        with open(self.path) as f:
            lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
        for number, line in enumerate(lines, 1):
            try:
                if not isinstance(json.loads(line)["step"], int):
                    raise TypeError("step is not an integer")
            except (ValueError, KeyError, TypeError) as err:
                raise GanJaxError(
                    f"{self.path} line {number} is not a metrics entry ({type(err).__name__}: {err}); "
                    "repair or remove that line, or move the file away, and rerun. Nothing was written.") from None
        return lines

    def write(self, step: int, values: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of the run in `workdir`: its config.json, written with the run's first checkpoint."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except FileNotFoundError:
        raise GanJaxError(f"{path} does not exist: {workdir} is not a gan_jax run folder, or its run has not saved "
                          "its first checkpoint yet") from None


# Settings that change when and where things are written or how data reach the step, not the numbers the run
# computes.
_BOOKKEEPING = ("train.steps", "train.log_every", "train.checkpoint_every", "train.sample_every",
                "train.eval_every", "train.max_to_keep", "train.eval_samples", "parallel.", "data.pipeline",
                "data.device_budget_mb", "data.read_threads", "data.prefetch")


def report_config_changes(workdir: str, cfg: ml_collections.ConfigDict, start: int) -> None:
    """Lists on stderr every setting that differs from the previous segment's config.json."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = config_lib.flatten(config_lib.with_defaults(json.load(f)))  # fields it predates at their defaults
        new = config_lib.flatten(json.loads(cfg.to_json()))  # tuples as JSON lists
    changed = sorted(k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if changed:
        print("resuming with changed settings (each segment's config is kept in config_history/): " + "; ".join(
            f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in changed), file=sys.stderr)
    if any(not k.startswith(_BOOKKEEPING) for k in changed):
        print(f"note: from step {start} this run is no longer bit for bit the run of either config alone.",
              file=sys.stderr)
    if "seed" in changed:
        print(f"note: seed {old.get('seed')} -> {new.get('seed')}: training continues the checkpoint's random "
              "stream (the old seed's); the new seed only draws the evaluation samples.", file=sys.stderr)
    if start >= cfg.train.steps:
        print(f"note: the checkpoint is at step {start} >= train.steps={cfg.train.steps}: nothing will train; "
              "raise --config.train.steps to continue.", file=sys.stderr)


def save_config(workdir: str, cfg: ml_collections.ConfigDict, start: int) -> None:
    """config.json (this segment's) and config_history/<start step>.json (every segment's), each replaced whole
    (a reader never sees half a file)."""
    text = cfg.to_json(indent=2)
    os.makedirs(os.path.join(workdir, "config_history"), exist_ok=True)
    for path in (os.path.join(workdir, "config_history", f"{start}.json"), os.path.join(workdir, "config.json")):
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)


def refuse_structural_changes(workdir: str, cfg: ml_collections.ConfigDict) -> None:
    """IncompatibleCheckpointError, before anything is written or locked, when the workdir's last config.json
    differs from `cfg` in a field that shapes the saved state (the checkpoint restore checks it again)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # not ours to judge here: the workdir checks and the checkpoint restore report it
    diffs = config_lib.structural_differences(saved, json.loads(cfg.to_json()))
    if diffs:
        raise checkpoint.IncompatibleCheckpointError(
            f"{os.path.abspath(workdir)} holds a run of a differently shaped config: {'; '.join(diffs)}. Resume "
            "with the original values, or start the new config in a fresh --workdir. Nothing was changed on disk.")
