r"""Claim 3: a trained discriminator approaches D* = p_data/(p_data + p_model), and V(G, D*) = 2·JSD − 2·log 2.

p_data is the two-Gaussian mixture (gan_jax.data.toy "two_gaussians_1d": ½N(−2, 0.5²) + ½N(2, 0.5²)),
p_model = N(0, 1.5²), both fixed. A small MLP discriminator (gan_jax.models.MLPCritic, D = sigmoid(logit)) is
trained with Adam on the binary cross-entropy of gan_jax.losses "minimax" (fresh samples of both densities
each step); its D(x) is compared on a grid with D* = divergences.optimal_discriminator. The GAN value
V(G, D) = E_data log D + E_model log(1 − D) (divergences.gan_value) at D* is checked against
2·JSD(p_data, p_model) − 2·log 2 (divergences.js), and V(G, D_trained) ≤ V(G, D*).

Float32 note: gan_value gives −∞ where D* rounds to 1 while p_model > 0 (p_model < ~6e-8·p_data). Here
p_model is the broader density, so on the grid [−8, 8] D* stays below 1 and every value is finite; the
script checks this and reports it.

    python -m experiments.lecture.optimal_discriminator --outdir=results/lecture
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.lecture import common
from gan_jax import divergences, losses, models, plotting
from gan_jax.data import toy

NAME = "optimal_discriminator"
MODEL_MEAN, MODEL_STD = 0.0, 1.5
GRID = (-8.0, 8.0, 1601)  # wide enough that both densities integrate to 1 within ~1e-7 on it
LEARNING_RATE = 1e-2  # Adam, cosine-decayed to 5 % over the run
MASS_LEVEL = 0.01  # "where the densities have mass": ½(p_data + p_model) > MASS_LEVEL · its maximum


def _log_p_model(x: jax.Array) -> jax.Array:
    return divergences.gaussian_log_pdf(x, MODEL_MEAN, MODEL_STD)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5))
def train_discriminator(
    data: toy.ToyDistribution, critic: models.MLPCritic, key: jax.Array, steps: int, batch: int, learning_rate: float
) -> tuple[dict, jax.Array]:
    """Adam on the minimax discriminator loss −E_data log D − E_model log(1 − D); returns (params, losses).

    The batches of both densities are drawn up front, each in one call (a smaller program to compile).
    """
    init_key, data_key, model_key = jax.random.split(key, 3)
    params = critic.init(init_key, jnp.zeros((1, 1)))
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    bce = losses.get("minimax").critic
    real = data.sample(data_key, steps * batch).reshape(steps, batch, 1)
    fake = MODEL_MEAN + MODEL_STD * jax.random.normal(model_key, (steps, batch, 1))

    def loss_fn(p, real, fake):
        return bce(critic.apply(p, real), critic.apply(p, fake))

    def step(carry, batches):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, *batches)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), history = jax.lax.scan(step, (params, optimizer.init(params)), (real, fake))
    return params, history


@functools.partial(jax.jit, static_argnums=(0, 1))
def _on_grid(data: toy.ToyDistribution, critic: models.MLPCritic, params: dict) -> dict:
    """Densities, D*, trained D and the GAN values on the grid."""
    x = jnp.linspace(*GRID)
    dx = (GRID[1] - GRID[0]) / (GRID[2] - 1)
    p_data = jnp.exp(data.log_prob(x[:, None]))
    p_model = jnp.exp(_log_p_model(x))
    d_star = divergences.optimal_discriminator(p_data, p_model)
    d_trained = jax.nn.sigmoid(critic.apply(params, x[:, None]))
    return {
        "x": x,
        "p_data": p_data,
        "p_model": p_model,
        "d_star": d_star,
        "d_trained": d_trained,
        "v_star": divergences.gan_value(p_data, p_model, d_star, dx),
        "v_trained": divergences.gan_value(p_data, p_model, d_trained, dx),
        "jsd": divergences.js(p_data, p_model, dx),
    }


def run(outdir: str, quick: bool = False) -> dict:
    """Computes the table and figure of claim 3; returns the numbers and "markdown", "png"."""
    steps, batch = (1000, 256) if quick else (4000, 512)
    data = toy.get("two_gaussians_1d")
    critic = models.MLPCritic(width=64, depth=2, activation="relu")
    params, history = train_discriminator(data, critic, jax.random.key(0), steps, batch, LEARNING_RATE)
    grid = {k: np.asarray(v, np.float64) for k, v in jax.device_get(_on_grid(data, critic, params)).items()}
    x, p_data, p_model, d_star, d_trained = (grid[k] for k in ("x", "p_data", "p_model", "d_star", "d_trained"))
    dx = (GRID[1] - GRID[0]) / (GRID[2] - 1)

    v_star, v_trained, jsd = float(grid["v_star"]), float(grid["v_trained"]), float(grid["jsd"])
    jsd_identity = 2.0 * jsd - 2.0 * math.log(2.0)
    mass = 0.5 * (p_data + p_model)
    where_mass = mass > MASS_LEVEL * np.max(mass)
    error = np.abs(d_trained - d_star)
    results = {
        "v_star": v_star,
        "two_jsd_minus_two_log2": jsd_identity,
        "v_star_minus_identity": v_star - jsd_identity,
        "v_trained": v_trained,
        "jsd": jsd,
        "d_max_abs_error": float(error[where_mass].max()),
        "d_mean_abs_error": float(error[where_mass].mean()),
        "d_mass_weighted_abs_error": float(np.sum(mass * error) * dx),
        "mass_fraction_of_region": float(np.sum(mass[where_mass]) * dx),
        "d_star_max": float(np.max(d_star)),
        "all_finite": bool(np.isfinite([v_star, v_trained, jsd]).all()),
        "final_bce": float(np.mean(history[-50:])),
    }

    rows = [
        ["V(G, D*) = gan_value(p_data, p_model, D*)", v_star],
        ["2·JSD − 2·log 2 (JSD from divergences.js)", jsd_identity],
        ["difference V(G, D*) − (2·JSD − 2·log 2)", f"{v_star - jsd_identity:.2e}"],
        ["V(G, D_trained) (≤ V(G, D*))", v_trained],
        ["−(final training BCE, mean of last 50 steps) ≈ V(G, D_trained)", -results["final_bce"]],
        ["JSD(p_data, p_model)", jsd],
        [f"max abs(D_trained − D*) where mass ({where_mass.sum()} grid points)", results["d_max_abs_error"]],
        ["mean abs(D_trained − D*) where mass", results["d_mean_abs_error"]],
        ["mass-weighted mean abs(D_trained − D*), Σ ½(p_data + p_model)|D − D*| dx", results["d_mass_weighted_abs_error"]],
        ["max D* on the grid (float32: −∞ in V would need D* = 1)", results["d_star_max"]],
    ]
    markdown = "\n".join(
        [
            f"p_data = ½N(−2, 0.5²) + ½N(2, 0.5²), p_model = N({MODEL_MEAN:g}, {MODEL_STD:g}²), on a grid of "
            f"{GRID[2]} points in [{GRID[0]:g}, {GRID[1]:g}]; discriminator MLP 1→64→64→1 (ReLU), {steps} Adam steps, "
            f"batch {batch} + {batch}. \"Where mass\": ½(p_data + p_model) > {MASS_LEVEL:g}·max "
            f"({100 * results['mass_fraction_of_region']:.1f} % of the mass).",
            "",
            common.table(["quantity", "value"], rows),
            "",
            "All values finite." if results["all_finite"] else "Non-finite values met (see the float32 note).",
        ]
    )
    common.write_markdown(outdir, NAME, markdown)
    shown = slice(200, -200, 8)  # [−6, 6], every 8th grid point
    png = plotting.curves(
        common.png_path(outdir, NAME),
        x[shown],
        {
            "p_data (two Gaussians)": p_data[shown],
            f"p_model N({MODEL_MEAN:g}, {MODEL_STD:g}²)": p_model[shown],
            "D* = p_data/(p_data+p_model)": d_star[shown],
            "trained D": d_trained[shown],
        },
        xlabel="x",
        ylabel="density / D(x)",
        title=f"Trained D vs D*: V(G,D*) = {v_star:.4f}, 2JSD − 2log2 = {jsd_identity:.4f}",
    )
    return {**results, "markdown": markdown, "png": png}


if __name__ == "__main__":
    common.main(run, NAME)
