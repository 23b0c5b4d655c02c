"""Shared pieces of the lecture scripts: the two command-line flags, markdown tables, output files.

Every script is run as ``python -m experiments.lecture.<name> --outdir=results/lecture [--quick]`` and
exposes ``run(outdir, quick=False) -> dict`` (the numbers, plus "markdown" and "png"). The flags are
defined here once, so `run_all` can import every script into one process.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

from absl import app, flags

OUTDIR = flags.DEFINE_string("outdir", "results/lecture", "Folder for the tables (<name>.md) and figures (<name>.png).")
QUICK = flags.DEFINE_bool("quick", False, "Small sizes (a few seconds per script), as used by the tests.")


def fmt(value: float, digits: int = 4) -> str:
    """A number for a table: ∞ / −∞ / nan spelled out, otherwise `digits` significant digits."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats go through `fmt`, anything else through str; "|" in a cell is escaped."""
    cell = lambda v: (fmt(v) if isinstance(v, float) else str(v)).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(outdir: str, name: str, markdown: str) -> str:
    """Writes `markdown` to outdir/<name>.md and returns the path."""
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, f"{name}.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown.rstrip() + "\n")
    return path


def png_path(outdir: str, name: str) -> str:
    """outdir/<name>.png."""
    return os.path.join(outdir, f"{name}.png")


def main(run: Callable[..., dict], name: str, options: Callable[[], dict] | None = None) -> None:
    """Runs `run(outdir, quick, **options())` from the flags, prints the table and where the files are.

    `options` reads a script's own flags (called once the flags are parsed).
    """

    def _main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        start = time.perf_counter()
        result = run(OUTDIR.value, quick=QUICK.value, **(options() if options else {}))
        print(result["markdown"])
        print(
            f"\n{name}: {time.perf_counter() - start:.1f} s; wrote {os.path.join(OUTDIR.value, name + '.md')} "
            f"and {result['png']}"
        )

    app.run(_main)
