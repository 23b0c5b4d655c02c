"""What a run writes beside its checkpoints, and the checks on it at resume: metrics.jsonl (+ TensorBoard events),
config.json and config_history/<step>.json (each segment's config, recorded by the trainer once the segment's
first checkpoint is on disk), and the list of settings a resumed segment changed. Used by gan_jax.trainer; only
process 0 calls the writers. Files are reached through `etils.epath` (`gan_jax.workdir.as_path`): the workdir
may be a local path or a URL (gs://...).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import ml_collections
from etils import epath

from gan_jax import checkpoint
from gan_jax import config as config_lib
from gan_jax import workdir as workdir_lib
from gan_jax.errors import GanJaxError
from gan_jax.workdir import PathLike


def _tensorboard(logdir: epath.Path, resume_step: int) -> Optional[Any]:
    """tensorboardX's writer of the events in `logdir`; None, after a warning line on stderr, for a URL it cannot
    write (it writes gs:// and s3:// itself, given google-cloud-storage or boto3; other schemes it would take for
    local paths)."""
    from tensorboardX import SummaryWriter
    from tensorboardX.record_writer import REGISTERED_FACTORIES  # the URL schemes it writes: {"gs", "s3"}

    scheme = workdir_lib.url_scheme(logdir)
    reason = f"tensorboardX writes no {scheme}:// URLs"
    if scheme is None or scheme in REGISTERED_FACTORIES:
        try:
            return SummaryWriter(os.fspath(logdir), purge_step=resume_step + 1)
        except ImportError as err:  # its gs:// writer needs google-cloud-storage, its s3:// one boto3
            reason = str(err)
    print(f"gan_jax: warning: no TensorBoard events in {logdir} ({reason}); metrics.jsonl has every entry",
          file=sys.stderr)
    return None


class MetricsLog:
    """metrics.jsonl plus TensorBoard events; on resume, entries after the restored step are dropped.

    On a local path each entry is appended and flushed. Object storage has no append (gcsfs turns mode "a" into
    an overwrite), so on a URL the whole file is written again with each entry.
    """

    def __init__(self, workdir: PathLike, resume_step: int):
        root = workdir_lib.as_path(workdir)
        self.path = root / "metrics.jsonl"
        kept = []
        if self.path.exists():
            kept = [line for line in self._read_lines() if json.loads(line)["step"] <= resume_step]
            with workdir_lib.atomic_write(self.path) as f:
                f.writelines(kept)
        on_object_storage = workdir_lib.url_scheme(root) is not None
        self._entries = kept if on_object_storage else None  # there: the file's whole content, entry by entry
        self._file = None if on_object_storage else self.path.open("a")
        self._tb = _tensorboard(root / "tb", resume_step)

    def _read_lines(self) -> list[str]:
        """The file's lines, each checked to be a JSON object with a step; GanJaxError naming the line."""
        with self.path.open() as f:
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
        line = json.dumps({"step": step, **values}) + "\n"
        if self._file is None:
            self._entries.append(line)
            with workdir_lib.atomic_write(self.path) as f:
                f.writelines(self._entries)
        else:
            self._file.write(line)
            self._file.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_config(workdir: PathLike) -> ml_collections.ConfigDict:
    """The config of the run in `workdir`: its config.json, written with the run's first checkpoint."""
    path = workdir_lib.as_path(workdir) / "config.json"
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise GanJaxError(f"{path} does not exist: {workdir} is not a gan_jax run folder, or its run has not saved "
                          "its first checkpoint yet") from None


# Settings that change when and where things are written or how data reach the step, not the numbers the run
# computes.
_BOOKKEEPING = ("train.steps", "train.log_every", "train.checkpoint_every", "train.sample_every",
                "train.eval_every", "train.max_to_keep", "train.eval_samples", "parallel.", "data.pipeline",
                "data.device_budget_mb", "data.read_threads", "data.prefetch")


def report_config_changes(workdir: PathLike, cfg: ml_collections.ConfigDict, start: int) -> None:
    """Lists on stderr every setting that differs from the previous segment's config.json."""
    path = workdir_lib.as_path(workdir) / "config.json"
    if not path.exists():
        return
    old = config_lib.flatten(config_lib.with_defaults(json.loads(path.read_text())))  # fields it predates: defaults
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


def save_config(workdir: PathLike, cfg: ml_collections.ConfigDict, start: int) -> None:
    """config.json (this segment's) and config_history/<start step>.json (every segment's), each replaced whole
    (a reader never sees half a file)."""
    root = workdir_lib.as_path(workdir)
    text = cfg.to_json(indent=2)
    (root / "config_history").mkdir(parents=True, exist_ok=True)
    for path in (root / "config_history" / f"{start}.json", root / "config.json"):
        with workdir_lib.atomic_write(path) as f:
            f.write(text)


def refuse_structural_changes(workdir: PathLike, cfg: ml_collections.ConfigDict) -> None:
    """IncompatibleCheckpointError, before anything is written or locked, when the workdir's last config.json
    differs from `cfg` in a field that shapes the saved state (the checkpoint restore checks it again)."""
    root = workdir_lib.as_path(workdir)
    path = root / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # not ours to judge here: the workdir checks and the checkpoint restore report it
    diffs = config_lib.structural_differences(saved, json.loads(cfg.to_json()))
    if diffs:
        raise checkpoint.IncompatibleCheckpointError(
            f"{root} holds a run of a differently shaped config: {'; '.join(diffs)}. Resume "
            "with the original values, or start the new config in a fresh --workdir. Nothing was changed on disk.")
