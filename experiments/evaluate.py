r"""Evaluate a saved step of a workdir, read-only: `python -m experiments.evaluate --workdir=runs/digits`.

    python -m experiments.evaluate --workdir=runs/digits --metrics=fid,kid,is,pr,dc --num_samples=10000
    python -m experiments.evaluate --workdir=runs/cifar --step=best --extractor=inception \
        --inception_weights=~/pt_inception-2015-12-05-6726825d.pth --out=/tmp/cifar_best.json

Flags and `main` only: the work is `gan_jax.trainer.evaluate_checkpoint`. Nothing is written in the workdir
(no lock, no cache): it is safe beside the run that is training there. Prints a table and the JSON; `--out`
writes the JSON to a file outside the workdir.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from gan_jax import workdir as workdir_lib
from gan_jax.errors import GanJaxError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's folder (what experiments.train wrote).")
_STEP = flags.DEFINE_string("step", "latest", "latest, best (config.eval.best_metric), or a step number.")
_METRICS = flags.DEFINE_string("metrics", None, "Comma-separated among fid, kid, is, pr, dc (default: the run's "
                               "config.eval.metrics; '' there = all the extractor supports).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "Generated samples (default: train.eval_samples).")
_EXTRACTOR = flags.DEFINE_string("extractor", None, "inception, classifier, points or auto (default: the run's).")
_WEIGHTS = flags.DEFINE_string("inception_weights", None, "Path of pt_inception-2015-12-05-6726825d.pth.")
_OUT = flags.DEFINE_string("out", None, "Also write the JSON result to this file (outside the workdir).")


def _error_exit(message: str) -> None:
    print(f"gan_jax: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)  # orbax's reader threads would print while the interpreter shuts down


def _overrides() -> dict[str, object]:
    given = {"eval.metrics": _METRICS.value, "train.eval_samples": _NUM_SAMPLES.value,
             "eval.extractor": _EXTRACTOR.value,
             "eval.inception_weights": None if _WEIGHTS.value is None else os.path.expanduser(_WEIGHTS.value)}
    return {field: value for field, value in given.items() if value is not None}


def _check_out(workdir: str, out: str | None) -> None:
    if out is None:
        return
    root, target = (os.fspath(workdir_lib.as_path(p)).rstrip("/") for p in (workdir, out))
    if target == root or target.startswith(root + "/"):
        raise GanJaxError(f"--out={out} lies inside the workdir {workdir}, which evaluation never writes: "
                          "give a path elsewhere")
    if os.path.isdir(out):
        raise GanJaxError(f"--out={out} is a directory: give a file name")


def table(result: dict) -> str:
    """The numeric entries of `result` as a two-column markdown table."""
    rows = [f"| {name} | {value:.6g} |" for name, value in result.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def main(argv: list[str]) -> None:
    """Prints the table and the JSON of the evaluation; exit 2 with one `gan_jax: error:` line on bad input."""
    if len(argv) > 1:
        _error_exit(f"unexpected arguments {argv[1:]}: every option is a --flag (see --help)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from gan_jax import trainer  # after flag parsing: importing JAX is slow

    workdir = (_WORKDIR.value or "").strip()
    try:
        if not workdir:
            raise GanJaxError("--workdir is required: the folder a training run wrote (e.g. --workdir=runs/digits)")
        if not os.path.isfile(os.path.join(workdir, "config.json")):
            raise GanJaxError(f"{workdir} is not a gan_jax workdir (no config.json): give the folder a training "
                              "run wrote")
        step = _STEP.value
        if step not in ("latest", "best") and not step.isdigit():
            raise GanJaxError(f"--step={step!r}: use latest, best or a step number")
        _check_out(workdir, _OUT.value)
        result = trainer.evaluate_checkpoint(workdir, step=step, overrides=_overrides())
    except GanJaxError as err:
        _error_exit(str(err))
    print(table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(text + "\n")
        print(f"wrote {_OUT.value}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
