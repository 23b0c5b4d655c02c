r"""Train a GAN from a config: `python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py`.

    python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py --workdir=runs/ring8
    python -m experiments.train --config=experiments/configs/ring8_gan.py:smoke --config.train.steps=200

Flags and `main` only: the work is `gan_jax.trainer.train_and_evaluate(config, workdir)`. Running again with the
same --workdir resumes from its newest valid checkpoint, bit for bit. The workdir receives checkpoints/,
metrics.jsonl, TensorBoard events (tb/), samples/*.png, config.json and summary.json.

Exit codes:
  0  trained and evaluated; the last lines name the outputs.
  2  one `gan_jax: error:` line: a problem with the flags, config, workdir, data or checkpoints, or a full disk
     (a `GanJaxError`; the line names the fix).
  128 + signal  SIGTERM (143) or SIGINT (130) at any moment: one `gan_jax:` line saying what is saved (while
     training, a checkpoint of the current step is saved first).
  1  anything else is a bug or an unexplained failure: its traceback, ending with a `gan_jax:` line on what
     is saved (and what may help, for running out of memory).
"""

from __future__ import annotations

import json
import os
import signal
import sys

_OUTSIDE_THE_RUN = "during start-up: nothing was trained or saved"  # what a signal outside the trainer means


def _exit_on_signal(signum: int, frame) -> None:
    """SIGTERM/SIGINT outside the trainer (imports, flags, the summary's printing): one line, exit 128 + signal."""
    del frame
    print(f"gan_jax: {signal.Signals(signum).name} received {_OUTSIDE_THE_RUN}.", file=sys.stderr, flush=True)
    os._exit(128 + signum)


if __name__ == "__main__":  # before the imports below, which take seconds (jax); the trainer takes over later
    for _signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signal, _exit_on_signal)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gan_jax import parallel  # noqa: E402
from gan_jax import workdir as workdir_lib  # noqa: E402
from gan_jax.errors import GanJaxError  # noqa: E402
from gan_jax.preemption import Preempted  # noqa: E402
from gan_jax.trainer import train_and_evaluate  # noqa: E402


def _error_exit(message: str) -> None:
    """One `gan_jax: error:` line on stderr, exit code 2.

    The process ends at once (`os._exit`): after a failed checkpoint read, orbax's background event loop
    would otherwise print tracebacks while the interpreter shuts down. Nothing is pending at this point (the
    checkpointer has waited for its saves; the kernel releases the workdir lock).
    """
    print(f"gan_jax: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


def _flag_error(err: Exception) -> str:
    """The readable part of a flag-parsing error: a config file's own error line, a misspelt key's hint."""
    text = str(err).replace("\\n", "\n").replace("\\'", "'")
    if "Traceback (most recent call last)" in text:  # an error raised inside a config file's get_config
        text = text.split("Traceback (most recent call last)")[0] + text.strip().splitlines()[-1]
    if isinstance(err, (AttributeError, KeyError)):
        overrides = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")]
        hint = text[text.find("Did you mean"):].rstrip("'") if "Did you mean" in text else "see the config file"
        text = f"unknown config key among {' '.join(overrides)}: {hint}"
    return text


# The config flag reads --config.* overrides from sys.argv when it is defined (at import), so a misspelt key
# fails here, before absl's parser runs.
try:
    _CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/ring8_cover.py",
                                              "Experiment config file (append :smoke for the test variant).")
except (AttributeError, KeyError, ValueError, TypeError) as err:
    if __name__ != "__main__":
        raise
    _error_exit(_flag_error(err))
_WORKDIR = flags.DEFINE_string("workdir", "runs/ring8_cover", "Output folder; reuse it to resume.")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with any failure (config file, variant, override key or value, a positional
    argument) as one line."""
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):
                _error_exit(f"config file {path!r} not found; the configs are experiments/configs/*.py "
                            "(e.g. --config=experiments/configs/ring8_wgan_gp.py)")
    try:
        remaining = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as err:
        _error_exit(_flag_error(err))
    if len(remaining) > 1:
        _error_exit(f"unexpected argument(s) {' '.join(map(repr, remaining[1:]))}: experiments.train takes only "
                    "flags, e.g. --config=experiments/configs/ring8_gan.py --workdir=runs/ring8")
    return remaining


def _failure_note(err: Exception, workdir: str) -> str:
    """The line after an unexplained error's traceback: what may help, and which checkpoint is intact."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text:
        cause = ("out of memory: lower data.batch_size or the model's size, or spread the run over more devices "
                 "(parallel.num_devices)")
    else:
        cause = "the error above is not a problem gan_jax recognises in the config, data or files (a bug?)"
    steps = workdir_lib.saved_steps(workdir) if str(workdir).strip() else []
    saved = (f"checkpoint step {steps[0]} in {workdir_lib.as_path(workdir) / workdir_lib.CHECKPOINTS} "
             "is intact; the same command resumes from it" if steps else "no checkpoint was saved")
    return f"gan_jax: {cause}; {saved}."


def main(argv: list[str]) -> None:
    """Trains --config in --workdir and prints the summary; the exit codes are the module docstring's."""
    del argv  # _parse_flags refused any positional argument
    global _OUTSIDE_THE_RUN
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows them
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Preempted as err:
        print(f"gan_jax: {err}.", file=sys.stderr, flush=True)
        sys.exit(128 + err.signum)
    except GanJaxError as err:
        _error_exit(str(err))
    except Exception as err:  # a bug or an unexplained failure: keeps its traceback, with what is saved
        err.add_note(_failure_note(err, _WORKDIR.value))
        raise
    _OUTSIDE_THE_RUN = f"after the run finished: its outputs are in {summary['workdir']}"
    if not parallel.is_writer():
        return  # process 0 prints the summary
    print(json.dumps(summary, indent=2))
    print(f"done: samples {summary['figure']}, metrics {summary['metrics_file']}, "
          f"checkpoints {summary['checkpoints']}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
