"""How `python -m experiments.train` ends, in real subprocesses: a signal at each moment of a run, a full disk at
several moments of a save, a genuine bug, a stray argument, an empty --workdir, a foreign folder holding a
config.json, and a segment that fails before its first checkpoint.

Each test checks the one line the run ends with against what is on disk afterwards.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from gan_jax import trainer, workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "ring8_gan.py") + ":smoke"  # the smallest, n_critic = 1
ONE_DEVICE = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
QUIET = ("--config.train.sample_every=0",)


def _command(workdir, *overrides):
    return [sys.executable, "-m", "experiments.train", f"--config={CONFIG}", f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, **kwargs):
    kwargs = dict(dict(cwd=REPO, env=ONE_DEVICE), **kwargs)
    return subprocess.run(_command(workdir, *overrides), capture_output=True, text=True, timeout=600, **kwargs)


def _lines(stderr):
    """stderr's lines, tqdm's carriage-return updates split apart, empty ones dropped."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]


def _ends_with_one_error(result, message):
    """The error line, after checking: exit 2, no traceback, no logged error, one `gan_jax: error:` line, last."""
    lines = _lines(result.stderr)
    assert result.returncode == 2, result.stderr[-3000:]
    assert not [line for line in lines if "Traceback" in line or line.startswith(("E1", "E0", "W1", "W0"))], \
        result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0], result.stderr[-3000:]
    return errors[0]


class _Child:
    """A run in a subprocess whose stderr is read as it arrives, so a test can act when a given text appears."""

    def __init__(self, workdir, *overrides):
        self.proc = subprocess.Popen(_command(workdir, *overrides), cwd=REPO, env=ONE_DEVICE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._text, self._done = "", False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            with self._changed:
                self._text += chunk.decode(errors="replace")
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def wait_for(self, text, timeout=300):
        """Blocks until `text` has appeared on stderr (fails if the process ends or `timeout` s pass first)."""
        with self._changed:
            self._changed.wait_for(lambda: text in self._text or self._done, timeout)
            assert text in self._text, f"{text!r} never appeared:\n{self._text[-3000:]}"

    def finish(self, timeout=300):
        """(exit code, stderr) once the process has ended."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        self.proc.stderr.close()
        return code, self._text


# ------------------------------------------------------------------------------------------------------------
# Signals: each moment is recognised by a line the run prints (nothing waits on a clock).

LONG = ("--config.train.steps=100000", "--config.train.checkpoint_every=100000", *QUIET)
FINAL = ("--config.train.steps=10", *QUIET)  # the final evaluation compiles the sampler: seconds
MOMENTS = {  # moment: (flags, the text after which the signal is sent)
    "start-up": (LONG, "data: ring8"),  # printed after the restore; the metrics log and the feed follow
    "first compile": (LONG, "| 0/100000"),  # tqdm's bar, drawn just before the first (compiling) call
    "training": (LONG, "critic="),  # the bar's first logged losses
    "final evaluation": (FINAL, "evaluating step 10"),
}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_signal_at_any_moment_ends_with_one_true_line(tmp_path, moment, sig):
    flags, cue = MOMENTS[moment]
    child = _Child(tmp_path, *flags)
    child.wait_for(cue)
    child.proc.send_signal(sig)
    code, stderr = child.finish()
    assert code == 128 + sig, stderr[-3000:]
    lines = _lines(stderr)
    assert "Traceback" not in stderr and not any(line.startswith("gan_jax: error") for line in lines), stderr
    name, steps = signal.Signals(sig).name, workdir_lib.saved_steps(tmp_path)
    directory = tmp_path / "checkpoints"
    if moment == "start-up":
        assert lines[-1] == f"gan_jax: {name} received during start-up: nothing was trained or saved."
        assert steps == []
    elif moment == "final evaluation":
        assert lines[-1] == (f"gan_jax: {name} received during the final evaluation: training finished and step 10 "
                             f"is saved in {directory}; rerun the same command to evaluate.")
        assert steps == [10] and not (tmp_path / "summary.json").exists()
    else:  # the loop saves the step it reached: the first fused call's (5) when stopped during its compile
        assert len(steps) == 1 and (steps[0] == 5 if moment == "first compile" else steps[0] >= 5), steps
        assert lines[-1] == (f"gan_jax: {name} received at step {steps[0]}: checkpoint at step {steps[0]} saved "
                             f"in {directory}; rerun the same command to resume.")
        assert int(trainer.restore_state(str(tmp_path)).step) == steps[0]
    if moment == "final evaluation" and sig == signal.SIGINT:  # what the line advises does evaluate
        rerun = _run(tmp_path, *flags)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert json.loads((tmp_path / "summary.json").read_text())["step"] == 10
    elif moment == "final evaluation":  # the start-up of a resumed run
        child = _Child(tmp_path, *flags)
        child.wait_for("data: ring8")
        child.proc.send_signal(sig)
        code, stderr = child.finish()
        assert code == 128 + sig and _lines(stderr)[-1] == (
            f"gan_jax: {name} received during start-up: nothing was trained; checkpoint step 10 in {directory} is "
            "as it was; rerun the same command to resume."), stderr[-3000:]
        assert workdir_lib.saved_steps(tmp_path) == [10]


def _catches(pid, sig):
    """Whether process `pid` has a handler installed for `sig` (Linux: the SigCgt mask in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_cli_still_imports_ends_with_one_true_line(tmp_path, sig):
    """Sent as soon as the CLI's first lines have installed its handler, while jax and the toolkit import
    (seconds): no line is printed that early, so the handler is watched for in /proc, within a deadline."""
    if not os.path.exists(f"/proc/{os.getpid()}/status"):
        pytest.skip("needs Linux's /proc to see when the CLI's signal handler is installed")
    child = _Child(tmp_path, *LONG)
    deadline = time.monotonic() + 60
    while not _catches(child.proc.pid, signal.SIGTERM):  # Python itself never handles SIGTERM
        assert child.proc.poll() is None and time.monotonic() < deadline, "the CLI never installed its handler"
    child.proc.send_signal(sig)
    code, stderr = child.finish()
    assert code == 128 + sig, stderr[-3000:]
    assert _lines(stderr) == [f"gan_jax: {signal.Signals(sig).name} received during start-up: nothing was trained "
                              "or saved."]
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# A full disk: the workdir on a small tmpfs in a private mount namespace (root only; nothing outside sees it).
# The sizes are fractions of what a run needs, measured once: the files written before the first checkpoint,
# then each of its two checkpoints.


def _in_a_tmpfs(tmp_path, size_kb, script):
    """stdout of sh `script` run with "$@" = a 20-step CLI run whose workdir $WORKDIR is on a fresh tmpfs of
    `size_kb` KiB at $MNT, in a private mount namespace; skips where that cannot be mounted."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private mount namespace")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir(), out.mkdir()
    env = dict(ONE_DEVICE, OUT=str(out), MNT=str(mnt), WORKDIR=str(mnt / "run"))
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f'mount -t tmpfs -o size={size_kb}k tmpfs "$MNT" || exit 97\n{script}', "sh",
                           *_command(mnt / "run", *QUIET)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def run_sizes(tmp_path_factory):
    """{"before": KiB written before the first checkpoint, 10: KiB of step 10, 20: KiB of step 20} of the run."""
    du = _in_a_tmpfs(tmp_path_factory.mktemp("sizes"), 65536, '"$@" > /dev/null 2>&1 || exit 98\n'
                     'for path in "" /checkpoints/10 /checkpoints/20 /samples; do du -sk "$WORKDIR$path"; done')
    total, step10, step20, samples = (int(line.split()[0]) for line in du.splitlines())
    return {"before": total - step10 - step20 - samples, 10: step10, 20: step20}


_FILL_THEN_FREE = """
"$@" > "$OUT/err1" 2>&1; echo $? > "$OUT/rc1"; ls "$WORKDIR/checkpoints" > "$OUT/ls1"
mount -o remount,size=64m "$MNT" || exit 97
"$@" > "$OUT/err2" 2>&1; echo $? > "$OUT/rc2"; ls "$WORKDIR/checkpoints" > "$OUT/ls2"
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment, fraction", [("first save", 0.5), ("second save", 0.5)])
def test_a_full_disk_is_one_line_and_the_rerun_with_space_resumes(tmp_path, run_sizes, moment, fraction):
    """The disk holds what is written before the first checkpoint plus `fraction` of the checkpoint being saved
    (and the whole first one, for the second save). A save fails in its metadata (an OSError) or in its arrays
    (tensorstore's error text: both are in tests/test_workdir.py); every case must end the same way."""
    size = run_sizes["before"] + (run_sizes[10] + fraction * run_sizes[20] if moment == "second save"
                                  else fraction * run_sizes[10])
    _in_a_tmpfs(tmp_path, int(size), _FILL_THEN_FREE)
    out, workdir = tmp_path / "out", tmp_path / "mnt" / "run"
    first = subprocess.CompletedProcess([], int((out / "rc1").read_text()), "", (out / "err1").read_text())
    line = _ends_with_one_error(first, f"the disk of --workdir {workdir} is full (No space left on device)")
    complete = sorted(int(name) for name in (out / "ls1").read_text().split() if name.isdigit())
    assert complete == ([10] if moment == "second save" else []), complete
    if complete:
        assert f"checkpoint step 10 in {workdir}/checkpoints is complete and safe" in line
        assert "a checkpoint takes about" in line and "KiB there (the largest saved step)" in line
    else:
        assert "no checkpoint was completed" in line and "KiB of arrays and its metadata files" in line
    assert int((out / "rc2").read_text()) == 0, (out / "err2").read_text()[-3000:]
    assert ("resuming from checkpoint step 10" in (out / "err2").read_text()) == bool(complete)
    assert (out / "ls2").read_text().split() == ["10", "20"]  # the unfinished save's folder was removed


# ------------------------------------------------------------------------------------------------------------
# A genuine bug keeps its traceback.

_SHAPE_BUG = """
import runpy, sys
import flax.linen as nn
import jax.numpy as jnp
from gan_jax import models


class ShapeBugCritic(nn.Module):
    '''A critic with a deliberate bug: it broadcasts its 8 features to 3.'''

    @nn.compact
    def __call__(self, x, y=None, train=True):
        h = nn.Dense(8)(x)
        return jnp.broadcast_to(h, (h.shape[0], 3)).sum(-1)


def build_with_bug(model_cfg, data_shape, batch_axis=None):
    return BUILD(model_cfg, data_shape, batch_axis=batch_axis)[0], ShapeBugCritic()


BUILD, models.build = models.build, build_with_bug
sys.argv = ["experiments.train", *sys.argv[1:]]
runpy.run_module("experiments.train", run_name="__main__")
"""


def test_a_shape_bug_in_a_network_keeps_its_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-c", _SHAPE_BUG, *_command(tmp_path / "run")[3:]], cwd=REPO,
                            env=ONE_DEVICE, capture_output=True, text=True, timeout=600)
    lines = _lines(result.stderr)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback (most recent call last)" in result.stderr and "in __call__" in result.stderr
    assert any(line.startswith("ValueError: Incompatible ") and "for broadcasting" in line for line in lines)
    assert not any(line.startswith("gan_jax: error:") for line in lines), result.stderr[-3000:]
    assert lines[-1] == ("gan_jax: the error above is not a problem gan_jax recognises in the config, data or files "
                         "(a bug?); no checkpoint was saved.")


# ------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written.


def test_a_positional_argument_is_one_error_line(tmp_path):
    result = subprocess.run([*_command(tmp_path / "run"), "stray"], cwd=REPO, env=ONE_DEVICE, capture_output=True,
                            text=True, timeout=600)
    _ends_with_one_error(result, "unexpected argument(s) 'stray': experiments.train takes only flags")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", ["", " "], ids=["empty", "blank"])
def test_an_empty_workdir_is_refused_and_nothing_is_written(tmp_path, value):
    """Run from an empty folder: an empty --workdir would be that folder."""
    result = _run(value, cwd=tmp_path, env=dict(ONE_DEVICE, PYTHONPATH=REPO))
    _ends_with_one_error(result, f"--workdir={value!r} is empty: give the run's folder")
    assert os.listdir(tmp_path) == []


def test_a_foreign_folder_with_a_config_json_is_not_a_gan_jax_workdir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"learning_rate": 0.1, "layers": [64, 64]}))
    (tmp_path / "notes.txt").write_text("another project's run\n")
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    line = _ends_with_one_error(_run(tmp_path), "is not empty and was not created by gan_jax")
    assert "differently shaped" not in line and "<absent>" not in line
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


# ------------------------------------------------------------------------------------------------------------
# A segment's config is recorded with its first checkpoint.


def test_a_segment_that_fails_before_its_first_checkpoint_leaves_the_records_as_they_were(tmp_path):
    first = _run(tmp_path, "--config.train.steps=10", *QUIET)
    assert first.returncode == 0, first.stderr[-3000:]
    records = lambda: {path: path.read_bytes() for path in [tmp_path / "config.json",
                                                             *(tmp_path / "config_history").iterdir()]}
    before = records()
    failed = _run(tmp_path, "--config.train.steps=20", "--config.optim.critic.learning_rate=1e30", *QUIET)
    _ends_with_one_error(failed, "non-finite loss or parameters at step")
    assert "Last good checkpoint: step 10" in failed.stderr
    assert records() == before
    rerun = _run(tmp_path, "--config.train.steps=20", *QUIET)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming with changed settings (each segment's config is kept in config_history/): train.steps: 10 " \
           "-> 20" in rerun.stderr
    assert "no longer bit for bit" not in rerun.stderr
    assert sorted(os.listdir(tmp_path / "config_history")) == ["0.json", "10.json"]
    assert json.loads((tmp_path / "config_history" / "10.json").read_text())["optim"]["critic"]["learning_rate"] \
        == 1e-4
