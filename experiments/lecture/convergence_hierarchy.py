r"""Claim 7: KL-convergence implies JSD- and W-convergence; W can converge where KL and JSD cannot.

Two sequences approaching p, n = 1, 2, 4, …:

* A (overlapping supports): q_n = N(1/n, 1) → p = N(0, 1). KL, JSD and TV by gan_jax.divergences on a grid
  from log densities, W₁ by gan_jax.transport.wasserstein_1d between the gridded densities (as weights);
  checks: the closed forms KL = 1/(2n²) (divergences.gaussian_kl) and W₂ = W₁ = 1/n
  (transport.gaussian_w2), and the bounds behind the hierarchy, JSD ≤ ¼(KL(p‖q) + KL(q‖p)) (convexity of KL)
  and TV ≤ √(KL/2) (Pinsker). All of KL, JSD, TV, W → 0.
* B (disjoint supports): q_n = δ(1/n) → p = δ(0), as probability vectors over the atoms {0, 1/n}: KL = ∞,
  JSD = log 2 and TV = 1 for every n, while W₁ = 1/n → 0 (transport.wasserstein_1d on the atoms).

    python -m experiments.lecture.convergence_hierarchy --outdir=results/lecture
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.lecture import common
from gan_jax import divergences, plotting, transport

NAME = "convergence_hierarchy"
GRID = (-10.0, 10.0, 4001)  # spacing 0.005


@jax.jit
def _overlapping(shift: jax.Array) -> dict:
    """Sequence A at one shift 1/n: p = N(0, 1), q = N(shift, 1); numeric values and closed forms."""
    grid = jnp.linspace(*GRID)
    log_p = lambda x: divergences.gaussian_log_pdf(x, 0.0, 1.0)  # noqa: E731
    log_q = lambda x: divergences.gaussian_log_pdf(x, shift, 1.0)  # noqa: E731
    on_grid = {name: divergences.grid_divergence(name, log_p, log_q, grid) for name in divergences.names()}
    eye = jnp.eye(1)
    return {
        "kl": on_grid["kl"],
        "reverse_kl": on_grid["reverse_kl"],
        "js": on_grid["js"],
        "tv": on_grid["total_variation"],
        "w1": transport.wasserstein_1d(grid, grid, 1, jnp.exp(log_p(grid)), jnp.exp(log_q(grid))),
        "kl_closed": divergences.gaussian_kl(0.0, 1.0, shift, 1.0),
        "reverse_kl_closed": divergences.gaussian_kl(shift, 1.0, 0.0, 1.0),
        "w2_closed": transport.gaussian_w2(jnp.zeros(1), eye, shift[None], eye),
    }


@jax.jit
def _disjoint(theta: jax.Array) -> dict:
    """Sequence B at one θ = 1/n: p = δ_0, q = δ_θ as probability vectors over the atoms (0, θ)."""
    p, q = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    return {
        "kl": divergences.kl(p, q),
        "js": divergences.js(p, q),
        "tv": divergences.total_variation(p, q),
        "w1": transport.wasserstein_1d(jnp.zeros(1), theta[None]),
    }


def run(outdir: str, quick: bool = False) -> dict:
    """Computes the tables and figure of claim 7; returns the numbers per n and "markdown", "png"."""
    ns = np.asarray([1, 2, 4, 8, 16, 32] if quick else [1, 2, 4, 8, 16, 32, 64, 128])
    shifts = jnp.asarray(1.0 / ns, jnp.float32)
    a = {k: np.asarray(v, np.float64) for k, v in jax.device_get(jax.vmap(_overlapping)(shifts)).items()}
    b = {k: np.asarray(v, np.float64) for k, v in jax.device_get(jax.vmap(_disjoint)(shifts)).items()}
    a["js_bound"] = 0.25 * (a["kl_closed"] + a["reverse_kl_closed"])
    a["pinsker"] = np.sqrt(a["kl_closed"] / 2.0)

    rows_a = [
        [int(n), a["kl"][i], a["kl_closed"][i], a["js"][i], a["js_bound"][i], a["tv"][i], a["pinsker"][i],
         a["w1"][i], a["w2_closed"][i], 1.0 / n]
        for i, n in enumerate(ns)
    ]
    rows_b = [[int(n), b["kl"][i], b["js"][i], b["tv"][i], b["w1"][i], 1.0 / n] for i, n in enumerate(ns)]
    markdown = "\n".join(
        [
            f"**A: q_n = N(1/n, 1) → p = N(0, 1)** (numeric values on a grid of {GRID[2]} points in "
            f"[{GRID[0]:g}, {GRID[1]:g}]; closed forms as checks).",
            "",
            common.table(
                ["n", "KL(p‖q_n)", "closed form 1/(2n²)", "JSD", "bound ¼(KL + rev. KL)", "TV", "Pinsker √(KL/2)",
                 "W₁ (numeric)", "W₂ closed form", "1/n"],
                rows_a,
            ),
            "",
            "**B: q_n = δ(1/n) → p = δ(0)** (disjoint supports; probability vectors over the atoms {0, 1/n}).",
            "",
            common.table(["n", "KL(p‖q_n)", "JSD", "TV", "W₁", "1/n"], rows_b),
            "",
            f"In A every quantity → 0, and the numeric values sit under their bounds (KL → 0 forces JSD and TV → 0). "
            f"In B KL stays ∞ and JSD stays log 2 = {math.log(2):.4f} for every n while W₁ = 1/n → 0: W converges "
            "where KL and JSD do not.",
        ]
    )
    common.write_markdown(outdir, NAME, markdown)
    png = plotting.curves(
        common.png_path(outdir, NAME),
        np.log2(ns),
        {
            "A: KL(p‖q_n)": a["kl"],
            "A: JSD": a["js"],
            "B: KL(p‖q_n)": b["kl"],
            "B: JSD": b["js"],
            "B: W₁": b["w1"],
            "A: W₁ (drawn over B: W₁, equal)": a["w1"],
        },
        xlabel="log₂ n",
        ylabel="divergence / distance (log scale)",
        title="A: N(1/n, 1) → N(0, 1);   B: δ(1/n) → δ(0)",
        logy=True,
    )
    return {"n": ns, "overlapping": a, "disjoint": b, "markdown": markdown, "png": png}


if __name__ == "__main__":
    common.main(run, NAME)
