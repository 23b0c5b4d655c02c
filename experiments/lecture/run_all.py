r"""Runs every registered lecture script and gathers their tables into one markdown file.

    python -m experiments.lecture.run_all --outdir=results/lecture [--quick]

Each script writes <outdir>/<name>.md and <name>.png; the summary (default <outdir>.md, e.g.
results/lecture.md) holds one section per claim with its table and a link to its figure. Every registered
script is imported before the first one runs, so a wrong module name fails at once, not after hours of training.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

from absl import app, flags

from experiments.lecture import common

SUMMARY = flags.DEFINE_string("summary", None, "Summary markdown file; default <outdir>.md.")


class Claim(NamedTuple):
    """A lecture claim: its number, its title in the summary, and the script that reproduces it."""

    number: int
    title: str
    module: str  # experiments.lecture.<module>, exposing run(outdir, quick=False) -> dict


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Poor likelihood, great samples / great likelihood, poor samples", "likelihood_vs_samples"),
    Claim(2, "Two-sample classifier: accuracy → 0.5 as the generator matches the data", "two_sample_classifier"),
    Claim(3, "The optimal discriminator D* and V(G, D*) = 2·JSD − 2·log 2", "optimal_discriminator"),
    Claim(4, "Mode covering (forward KL) vs mode seeking (reverse KL)", "mode_covering_seeking"),
    Claim(4, "Mode covering vs mode seeking by adversarial training (f-GAN losses)", "fgan_covering_seeking"),
    Claim(5, "Disjoint supports: KL = ∞, JSD = log 2, W = |θ|", "disjoint_supports"),
    Claim(6, "Mode collapse: GAN vs unrolled GAN vs WGAN", "mode_collapse"),
    Claim(7, "W is continuous; KL-convergence implies JSD- and W-convergence, not conversely", "convergence_hierarchy"),
)


def run_all(
    outdir: str, quick: bool = False, summary: str | None = None, claims: Sequence[Claim] = CLAIMS
) -> dict[str, dict]:
    """Runs each claim's script into `outdir`, writes the summary; returns module name → its result."""
    modules = {c.module: importlib.import_module(f"experiments.lecture.{c.module}") for c in claims}
    summary = summary or os.path.normpath(outdir) + ".md"
    summary_dir = os.path.dirname(os.path.abspath(summary))
    sections = [
        "# The lecture's claims, reproduced",
        "",
        f"Produced by `python -m experiments.lecture.run_all --outdir={outdir}{' --quick' if quick else ''}`; "
        "every number below is computed by the toolkit.",
    ]
    results: dict[str, dict] = {}
    for i, claim in enumerate(claims, 1):
        print(f"[{i}/{len(claims)}] claim {claim.number}: {claim.module} ...", flush=True)
        sections += ["", f"## Claim {claim.number}: {claim.title}", ""]
        start = time.perf_counter()
        result = modules[claim.module].run(outdir, quick=quick)
        seconds = time.perf_counter() - start
        print(f"    done in {seconds:.1f} s", flush=True)
        png = os.path.relpath(os.path.abspath(result["png"]), summary_dir)
        sections += [
            f"`python -m experiments.lecture.{claim.module} --outdir={outdir}{' --quick' if quick else ''}`",
            "",
            result["markdown"].strip(),
            "",
            f"![{claim.module}]({png})",
        ]
        results[claim.module] = result
    os.makedirs(summary_dir, exist_ok=True)
    with open(summary, "w", encoding="utf-8") as f:
        f.write("\n".join(sections) + "\n")
    print(f"Ran {len(claims)} lecture scripts. Summary: {summary}; tables and figures: {outdir}/", flush=True)
    return results


def main(argv: Sequence[str]) -> None:
    """Runs every claim's script with the command line's --outdir, --quick and --summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_all(common.OUTDIR.value, quick=common.QUICK.value, summary=SUMMARY.value)


if __name__ == "__main__":
    app.run(main)
