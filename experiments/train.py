r"""Train a GAN from a config: `python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py`.

    python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py --workdir=runs/ring8
    python -m experiments.train --config=experiments/configs/ring8_gan.py:smoke --config.train.steps=200

Flags and `main` only: the work is `gan_jax.trainer.train_and_evaluate(config, workdir)`. Running again with the
same --workdir resumes from its newest valid checkpoint, bit for bit. The workdir receives checkpoints/,
metrics.jsonl, TensorBoard events (tb/), samples/*.png, config.json and summary.json. SIGTERM/SIGINT save a
checkpoint at the current step before exiting (exit code 143 / 130).
"""

from __future__ import annotations

import json
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gan_jax import parallel
from gan_jax.trainer import Preempted, train_and_evaluate


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
    _CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/ring8_best.py",
                                              "Experiment config file (append :smoke for the test variant).")
except (AttributeError, KeyError, ValueError, TypeError) as err:
    if __name__ != "__main__":
        raise
    _error_exit(_flag_error(err))
_WORKDIR = flags.DEFINE_string("workdir", "runs/ring8_best", "Output folder; reuse it to resume.")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with any failure (config file, variant, override key or value) as one line."""
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):
                _error_exit(f"config file {path!r} not found; the configs are experiments/configs/*.py "
                            "(e.g. --config=experiments/configs/ring8_wgan_gp.py)")
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as err:
        _error_exit(_flag_error(err))
    return []


def main(argv: list[str]) -> None:
    """Trains --config in --workdir and prints the summary; exit 2 with one `gan_jax: error:` line on a bad
    config or workdir, 128 + signal number after a preemption (its checkpoint saved)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows them
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Preempted as err:
        print(f"gan_jax: {err}; rerun the same command to resume.", file=sys.stderr)
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:  # before the training loop (inside it, Ctrl-C saves a checkpoint)
        print("gan_jax: interrupted before training started; nothing was trained or saved.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except (ValueError, FloatingPointError) as err:
        _error_exit(str(err))
    except OSError as err:  # a file the run needs or writes: disk full, permissions, a path that is a file
        _error_exit(f"{err}. Checkpoints saved before this point are intact.")
    if not parallel.is_writer():
        return  # process 0 prints the summary
    print(json.dumps(summary, indent=2))
    print(f"done: samples {summary['figure']}, metrics {summary['metrics_file']}, "
          f"checkpoints {summary['checkpoints']}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
