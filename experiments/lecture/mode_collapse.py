r"""Claim 6: mode collapse on the ring of 8 and the grid of 25 — GAN vs unrolled GAN vs WGAN (clip, GP), and
what it takes to reach the published sample quality (generator EMA, packing, f-GAN losses, DRS / MH-GAN).

Benchmarks and protocol of the published anchors (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018):
ring — 8 Gaussians of std 0.01 on the unit circle, means (cos 2πk/8, sin 2πk/8); grid — 25 Gaussians of std
0.05 on {−4, −2, 0, 2, 4}². 2500 generated samples per run; a sample is high quality (HQ) within 3σ of its
nearest mean; a mode is captured when it is the nearest mean of at least one HQ sample (VEEGAN); PacGAN's
reverse KL is KL(HQ mode histogram ‖ uniform). Mean ± std over seeds, next to the published numbers
(`PUBLISHED`) and to 2500 samples of the data itself: in 2-D P(‖x − μ‖ ≤ 3σ) = 1 − e^{−4.5} = 98.9 %, so the
data score about 99 % HQ, and a model above that is collapsing onto the mode centres, not better. The share of
samples within 1σ of their mean (data: 1 − e^{−0.5} = 39.3 %) is reported too, as that check.

Each method (`METHODS`) is an engine config: a preset of experiments/configs/common.py (its loss, penalty and
optimizer), config overrides (train.ema_decay, loss.pack, loss.name), its number of generator steps, and how
samples are drawn (the generator, or DRS / MH-GAN with the trained critic). Shared training protocol: MLP
generator and critic (width 64, depth 4, latent 2, batch 256); the last `DECAY_FRACTION` of the generator
steps at `DECAY_FACTOR` × the preset's learning rates (the engine's "step" schedule; experiments/lecture/
training.py, shared with claim 2). How the protocol, the best recipe and its samplers were chosen, with the
measurements behind each choice, is in results/lecture/mode_collapse_notes.md.

    python -m experiments.lecture.mode_collapse --outdir=results/lecture [--quick]
    python -m experiments.lecture.mode_collapse --outdir=results/lecture \
        --methods=best,best+drs,best+mh,spread,spread+drs,cover,cover+drs --seeds=10

Each (dataset, method) result is kept in <outdir>/mode_collapse.json (and its first seeds' samples in
mode_collapse_samples.npz), so a run of some methods updates their rows and the table and figure are rebuilt
from every stored result whose config still matches `METHODS` (others are listed as stale).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.image
import ml_collections
import numpy as np
from absl import flags

from experiments.configs import common as configs
from experiments.lecture import common
from experiments.lecture.training import DECAY_FACTOR, DECAY_FRACTION, latents, train_states, with_step_decay
from gan_jax import config as config_lib
from gan_jax import evaluation, metrics, plotting, sampling
from gan_jax import engine as engine_lib
from gan_jax.data import toy
from gan_jax.registry import Registry

NAME = "mode_collapse"
DATASETS = {"ring8": dict(radius=1.0, std=0.01), "grid25": dict(spacing=2.0, std=0.05)}
N_SAMPLES = 2500
HQ_THRESHOLD = 3.0  # in units of the component std
# k-NN metrics against N_SAMPLES fresh data samples: precision/recall with k = 3 (Kynkäänniemi et al. 2019),
# density/coverage with k = 5 (Naeem et al. 2020), each paper's recommended k.
PR_K, DC_K = 3, 5
KNN_COLUMNS = ("precision", "recall", "density", "coverage")
REFERENCE_SEED = 2**31 - 1  # the reference sample's key: no run or data row draws with it
SEEDS = 5  # methods without their own `seeds`
STEPS = {"ring8": 2000, "grid25": 4000}  # generator steps of methods without their own `steps`
MODEL = dict(width=64, depth=4, latent_dim=2, batch_size=256, steps_per_call=50)
SHOWN_SEEDS = 5  # seeds of the best recipe (BEST[0]) in the figure; one of every other method
# The zoomed figure: the mode nearest this point, in units of its std, for these methods' seed 0 (over the data).
ZOOM_POINT = {"ring8": (1.0, 0.0), "grid25": (0.0, 0.0)}


class Method(NamedTuple):
    """An engine config (a preset of experiments/configs/common.py plus overrides) and how to draw its samples."""

    preset: str
    overrides: tuple[tuple[str, object], ...] = ()  # (dotted config key, value): ConfigDict.update_from_flattened_dict
    steps: tuple[tuple[str, int], ...] = ()  # (dataset, generator steps); default STEPS
    sampler: str = "generator"  # a name in SAMPLERS
    seeds: int = SEEDS
    description: str = ""
    # (dataset, the decayed share of its steps); datasets not named: the protocol's DECAY_FRACTION
    decay_fraction: tuple[tuple[str, float], ...] = ()
    dataset_overrides: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # (dataset, its overrides)
    # (dataset, factor): the penalty's weight × factor from the learning-rate decay on (loss.penalty_schedule)
    penalty_decay: tuple[tuple[str, float], ...] = ()


_EMA = (("train.ema_decay", 0.99),)
_BEST_STEPS = (("ring8", 4000), ("grid25", 12000))
_BEST = dict(preset="gan_gp", overrides=_EMA, steps=_BEST_STEPS, seeds=10)
# The resolution a critic needs inside a mode of std σ is a slope of order 1/σ: the one-centred penalty at
# λ = 0.1 keeps it near 1, so the critic cannot see a mode drawn too narrow. A smaller λ lets it, and a latent
# wider than the data's 2 dimensions gives the generator a 2-D spread to draw inside each mode. The grid (modes
# 5× wider) drops modes when λ is small from the start: it keeps λ = 0.1 while the modes are found and takes
# λ/10 with the learning-rate decay (results/lecture/mode_collapse_notes.md).
_SPREAD = dict(preset="gan_gp", overrides=(*_EMA, ("model.latent_dim", 8)),
               dataset_overrides=(("ring8", (("loss.penalty_weight", 0.001),)),), penalty_decay=(("grid25", 0.1),),
               steps=(("ring8", 8000), ("grid25", 12000)), seeds=10)
# `spread` with, on the ring, the generator's learning rate at half the critic's (a two time-scale update, Heusel
# et al. 2017) and the last half of the steps decayed: the critic, kept ahead of the generator, sees a mode drawn
# narrower than the data's and pushes its samples out; the longer decay settles them back inside 3σ, and DRS takes
# out the samples left between modes. On the grid the slower generator unbalances the modes (reverse KL 0.04 with
# DRS, 4 seeds), so the grid keeps `spread`'s settings (results/lecture/mode_collapse_notes.md).
_COVER = dict(_SPREAD, decay_fraction=(("ring8", 0.5),), dataset_overrides=(
    ("ring8", (("loss.penalty_weight", 0.001), ("optim.generator.learning_rate", 1.5e-3))),))
METHODS: Registry[Method] = Registry("mode-collapse method", {
    "gan": Method("gan", description="Goodfellow et al. 2014, non-saturating"),
    "gan_fast": Method("gan_fast", description="gan with gan_gp's optimizer, no penalty (control)"),
    "unrolled": Method("unrolled", description="Metz et al. 2016, 5 unrolling steps"),
    "wgan_clip": Method("wgan_clip", description="Arjovsky et al. 2017"),
    "wgan_gp": Method("wgan_gp", description="Gulrajani et al. 2017"),
    "gan_gp": Method("gan_gp", description="non-saturating GAN + gradient penalty (Fedus et al. 2018)"),
    "gan_gp+ema": Method("gan_gp", _EMA, description="gan_gp, samples from a generator EMA, β = 0.99"),
    "gan_gp+ema+pack2": Method("gan_gp", (*_EMA, ("loss.pack", 2)), description="gan_gp+ema, critic on packs of 2"),
    "fgan_rkl_gp+ema": Method("gan_gp", (*_EMA, ("loss.name", "fgan_reverse_kl")),
                              description="f-GAN KL(Q‖P) (Nowozin et al. 2016), gan_gp's penalty and optimizer, EMA"),
    "best": Method(**_BEST, description="gan_gp + EMA 0.99, ring 4000 / grid 12000 steps"),
    "best+drs": Method(**_BEST, sampler="drs", description="best, discriminator rejection sampling (Azadi et al. 2019)"),
    "best+mh": Method(**_BEST, sampler="mh", description="best, MH-GAN (Turner et al. 2019)"),
    # What makes `best` draw each mode too narrow (issue: recall and coverage far below the data's): one change
    # of it per row.
    "best-ema": Method("gan_gp", steps=_BEST_STEPS, seeds=10, description="best without the generator EMA"),
    "best-decay": Method(**_BEST, decay_fraction=(("ring8", 0.0), ("grid25", 0.0)),
                         description="best at constant learning rates"),
    "best+gp0.01": Method("gan_gp", (*_EMA, ("loss.penalty_weight", 0.01)), _BEST_STEPS, seeds=10,
                          description="best with the gradient penalty's weight λ = 0.01 (0.1 ÷ 10)"),
    "best+r1": Method("gan_gp", (*_EMA, ("loss.penalty", "r1"), ("loss.penalty_weight", 0.001)), _BEST_STEPS,
                      seeds=10, description="best with the zero-centred R1 penalty on real data, γ = 0.001"),
    "best+latent8": Method("gan_gp", (*_EMA, ("model.latent_dim", 8)), _BEST_STEPS, seeds=10,
                           description="best with an 8-dimensional latent"),
    "spread": Method(**_SPREAD, description="gan_gp + EMA 0.99, latent 8, λ = 0.001 (ring) / 0.1 then 0.01 from "
                     "the learning-rate decay (grid), ring 8000 / grid 12000 steps"),
    "spread+drs": Method(**_SPREAD, sampler="drs", description="spread, discriminator rejection sampling"),
    "cover": Method(**_COVER, description="spread with, on the ring, the generator's learning rate at half the "
                    "critic's (1.5e-3) and the last half of the steps decayed"),
    "cover+drs": Method(**_COVER, sampler="drs", description="cover, discriminator rejection sampling"),
})
BEST = ("best", "best+drs", "best+mh", "spread", "spread+drs", "cover", "cover+drs")  # the rows of the headline table
ZOOM_METHODS = ("best", "spread", "cover+drs")  # the zoomed figure's columns
# DRS / MH-GAN (sampler "drs", "mh"): the critic is trained on alone for refit_steps (Adam, logistic loss, no
# penalty) against the sampling generator, its logits calibrated on `calibration` held-out real and generated
# samples, then applied to proposals × n_samples generator samples (MH: n_samples chains of `proposals` steps).
REFINE = dict(refit_steps=1000, refit_batch=512, refit_learning_rate=1e-3, refit_cosine=True, calibration=5000,
              proposals=20, max_logit_percentile=100.0, gamma_percentile=50.0)
# Tests: seconds per method, mostly compilation (one program per method and dataset; shorter fused calls and
# one hidden layer compile about twice as fast).
QUICK = dict(seeds=1, steps=60, decay_fraction=0.0, width=16, depth=1, batch_size=64, steps_per_call=10,
             n_samples=500, refit_steps=20, calibration=500, proposals=4)

# (method, (ring modes, HQ %, reverse KL), (grid modes, HQ %, reverse KL)); None = not reported. Same
# distributions and protocol; VEEGAN: Srivastava et al. 2017, Table 1 (mean over 5 runs); PacGAN: Lin et al.
# 2018, Table 1 (mean over 10 runs; 400 epochs of 100k points at batch 100); GDPP: Elfeki et al. 2019, Table 1
# (25k iterations at batch 512).
PUBLISHED = (
    ("GAN (VEEGAN Table 1)", (1, 99.3, None), (3.3, 0.5, None)),
    ("Unrolled GAN (VEEGAN Table 1)", (7.6, 35.6, None), (23.6, 16, None)),
    ("VEEGAN (VEEGAN Table 1)", (8, 52.9, None), (24.6, 40, None)),
    ("GAN (PacGAN Table 1)", (6.3, 98.2, 0.45), (17.3, 94.8, 0.70)),
    ("PacGAN2 (PacGAN Table 1)", (7.9, 95.6, 0.07), (23.8, 91.3, 0.13)),
    ("PacGAN3 (PacGAN Table 1)", (7.8, 97.7, 0.10), (24.6, 94.2, 0.06)),
    ("PacGAN4 (PacGAN Table 1)", (7.8, 95.9, 0.07), (24.8, 93.6, 0.04)),
    ("ALI (PacGAN Table 1)", (6.6, 97.6, 0.36), (24.1, 95.7, 0.14)),
    ("WGAN-GP (GDPP Table 1)", (6.8, 59.6, None), (24.2, 28.7, None)),
    ("GDPP-GAN (GDPP Table 1)", (8.0, 71.7, None), (24.8, 68.5, None)),
)

METHODS_FLAG = flags.DEFINE_list("methods", None, f"Methods to run (default all): {', '.join(METHODS)}.")
SEEDS_FLAG = flags.DEFINE_integer("seeds", None, "Seeds per method (default: each method's own, `Method.seeds`).")


# ---------------------------------------------------------------------------------------------------------
# Configs and training


def make_config(dataset: str, method: Method | str, steps: int, model: dict,
                decay_fraction: float | None = None) -> ml_collections.ConfigDict:
    """`method`'s engine config on the published `dataset`, trained for `steps` generator steps.

    `model` gives the sizes (keys of MODEL); the last `decay_fraction` of the steps (None: the method's own, else
    DECAY_FRACTION) run at DECAY_FACTOR × the learning rates, and at the method's `penalty_decay` × the penalty's
    weight for its datasets. A str `method` is a bare preset.
    """
    method = Method(method) if isinstance(method, str) else method
    if decay_fraction is None:
        decay_fraction = dict(method.decay_fraction).get(dataset, DECAY_FRACTION)
    cfg = configs.toy(dataset, method.preset, None, **DATASETS[dataset])
    cfg.model.width, cfg.model.depth, cfg.model.latent_dim = model["width"], model["depth"], model["latent_dim"]
    cfg.data.batch_size = model["batch_size"]
    cfg.train.steps, cfg.train.steps_per_call = steps, model["steps_per_call"]
    overrides = {**dict(method.overrides), **dict(dict(method.dataset_overrides).get(dataset, ()))}
    config_lib.set_fields(cfg, overrides)
    if decay_fraction > 0:
        decay_from = steps - int(round(decay_fraction * steps))
        cfg = with_step_decay(cfg, decay_from, DECAY_FACTOR)
        penalty_factor = dict(method.penalty_decay).get(dataset)
        if penalty_factor is not None:
            cfg.loss.penalty_schedule.update(schedule="step", boundaries=(decay_from,), decay_factor=penalty_factor)
    return cfg


# ---------------------------------------------------------------------------------------------------------
# Critic-driven sampling (DRS, MH-GAN)


def make_refined_sampler(engine: engine_lib.Engine, dist: toy.ToyDistribution, latent_dim: int, n_samples: int,
                         kind: str, refine: dict):
    """`sample(state, key) -> (samples (n_samples, d), statistic)` by DRS ("drs") or MH-GAN ("mh").

    The critic of `state` is refitted and calibrated as `REFINE` says; the statistic is DRS's acceptance rate or
    the mean number of proposals each MH chain accepted.
    """
    if engine.pack != 1:
        raise ValueError(f"{kind} needs one critic logit per sample; the critic scores packs of loss.pack="
                         f"{engine.pack} samples: use loss.pack=1")
    generate = lambda params, z: engine.generator.apply({"params": params}, z)  # noqa: E731
    n_proposals, n_cal = refine["proposals"] * n_samples, refine["calibration"]

    def critic(params, critic_state, x):
        return engine.critic.apply({"params": params, **critic_state}, x, train=False).reshape(-1)

    @jax.jit
    def sample(state, key):
        g_params, c_state = engine_lib.sampling_params(state), state.critic_state
        refit_key, real_key, fake_key, proposal_key, accept_key = jax.random.split(key, 5)
        c_params = sampling.refit_critic(
            refit_key, lambda p, x: critic(p, c_state, x), state.critic_params, dist.sample,
            lambda k, n: generate(g_params, jax.random.normal(k, (n, latent_dim))), steps=refine["refit_steps"],
            batch_size=refine["refit_batch"], learning_rate=refine["refit_learning_rate"],
            cosine=refine["refit_cosine"])
        held_real = dist.sample(real_key, n_cal)
        held_fake = generate(g_params, jax.random.normal(fake_key, (n_cal, latent_dim)))
        proposals = generate(g_params, jax.random.normal(proposal_key, (n_proposals, latent_dim)))
        logits = sampling.calibrate(critic(c_params, c_state, held_real), critic(c_params, c_state, held_fake),
                                    critic(c_params, c_state, proposals))
        if kind == "mh":  # chain i proposes rows i, n + i, 2n + i, ...; starts at its first proposal
            chains = sampling.metropolis_hastings(accept_key, proposals, logits, n_chains=n_samples)
            return chains.samples, jnp.mean(chains.accepted.astype(jnp.float32))
        # M = a percentile of the logits (100: their maximum, exact when it bounds log π/p); γ = a percentile of
        # Azadi et al.'s F = d − log(1 − exp(d − ε)), d = min(l − M, 0), ε = 1e-6 (None: accept with exp(d)).
        bound = jnp.percentile(logits, refine["max_logit_percentile"])
        d = jnp.minimum(logits - bound, 0.0)
        f = d - jnp.log(-jnp.expm1(d - 1e-6))
        gamma = None if refine["gamma_percentile"] is None else jnp.percentile(f, refine["gamma_percentile"])
        out = sampling.rejection_sample(accept_key, proposals, logits, max_logit=bound, gamma=gamma)
        # The first n accepted (in proposal order); `count < n` would leave zero rows: checked by the caller.
        return out.samples[:n_samples], out.count.astype(jnp.float32) / n_proposals

    return sample


# ---------------------------------------------------------------------------------------------------------
# Evaluation, stored results, tables and figures


def _scores(samples: np.ndarray, dist: toy.ToyDistribution, reference: np.ndarray) -> dict[str, float]:
    """The published columns (modes, HQ, reverse KL), the within-1σ share, and k-NN precision/recall (k =
    PR_K) and density/coverage (k = DC_K) against `reference`, fresh samples of the data."""
    cover = metrics.mode_coverage(samples, dist.centers(), dist.std, threshold=HQ_THRESHOLD)
    within_1 = metrics.mode_coverage(samples, dist.centers(), dist.std, threshold=1.0)
    precision, recall = evaluation.precision_recall(reference, samples, k=PR_K)
    density, coverage = evaluation.density_coverage(reference, samples, k=DC_K)
    return {"modes": int(cover.modes_captured), "hq": float(cover.high_quality_fraction),
            "reverse_kl": float(cover.reverse_kl), "within_1sd": float(within_1.high_quality_fraction),
            "precision": precision, "recall": recall, "density": density, "coverage": coverage}


def _one_mode(points: np.ndarray, dist: toy.ToyDistribution, dataset: str) -> np.ndarray:
    """(x − μ)/σ of the points whose nearest mean μ is the one nearest ZOOM_POINT[dataset]."""
    means = np.asarray(dist.means)
    mode = np.argmin(np.sum((means - np.asarray(ZOOM_POINT[dataset])) ** 2, axis=1))
    nearest = np.argmin(np.sum((points[:, None, :] - means[None]) ** 2, axis=-1), axis=1)
    return (points[nearest == mode] - means[mode]) / dist.std


def _zoom_figure(outdir: str, current: dict, stored_samples: dict) -> str | None:
    """PNG of one mode per dataset, in units of its std: the data over each ZOOM_METHODS row's seed 0."""
    shown = [m for m in ZOOM_METHODS if all(m in current[d] for d in DATASETS)]
    if not shown:
        return None
    figures = []
    for dataset, kwargs in DATASETS.items():
        dist = toy.get(dataset, **kwargs)
        data = _one_mode(np.asarray(stored_samples[f"{dataset}/data"][0], np.float32), dist, dataset)
        panels = []
        for name in shown:
            run = current[dataset][name]["runs"][0]
            points = _one_mode(np.asarray(stored_samples[f"{dataset}/{name}"][0], np.float32), dist, dataset)
            panels.append((f"{dataset} / {name}, seed 0\nrecall {run['recall']:.2f}, coverage {run['coverage']:.2f}",
                           points))
        figures.append(plotting.scatter_grid(os.path.join(outdir, f"{NAME}_zoom_{dataset}.png"), panels,
                                             centers=np.zeros((1, 2)), ncols=len(panels), lim=4.0, data=data))
    return _stack_pngs(os.path.join(outdir, f"{NAME}_zoom.png"), figures)


def _mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """Mean ± std over seeds; undefined values (NaN: reverse KL of a run with no HQ sample) are counted apart."""
    v = scale * np.asarray(values, dtype=np.float64)
    defined = v[np.isfinite(v)]
    if len(defined) == 0:
        return "undefined"
    text = f"{defined.mean():.{digits}f}"
    if len(defined) > 1:
        text += f" ± {defined.std():.{digits}f}"
    return text if len(defined) == len(v) else f"{text} ({len(v) - len(defined)} of {len(v)} runs undefined)"


def _anchor(value) -> str:
    return "–" if value is None else f"{value:g}"


def _stack_pngs(path: str, parts: Sequence[str]) -> str:
    """One PNG with the images of `parts` one below the other (white padding to the widest)."""
    images = [matplotlib.image.imread(p)[..., :3] for p in parts]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images]
    matplotlib.image.imsave(path, np.concatenate(padded, axis=0), format="png")
    return path


def _machine() -> str:
    """The processor's model name (results depend on it: floating point differs between machines)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def _fingerprint(cfg: ml_collections.ConfigDict, method: Method, n_samples: int, refine: dict) -> str:
    """What a stored result was computed with: the engine config, the sampler and its settings, the sample count."""
    config = cfg.to_dict()
    if config["loss"]["penalty_schedule"]["schedule"] == "constant":  # the λ of results stored before the field
        del config["loss"]["penalty_schedule"]
    what = {"config": config, "sampler": method.sampler, "n_samples": n_samples,
            "refine": refine if method.sampler != "generator" else None}
    return json.dumps(what, sort_keys=True, default=str)


def _load(outdir: str) -> tuple[dict, dict]:
    path = os.path.join(outdir, f"{NAME}.json")
    stored = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    samples_path = os.path.join(outdir, f"{NAME}_samples.npz")
    samples = dict(np.load(samples_path)) if os.path.exists(samples_path) else {}
    return stored, samples


def _save(outdir: str, stored: dict, samples: dict) -> None:
    """The results as JSON; of the samples only what the figure shows, as float16 (plotting precision)."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"{NAME}.json"), "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=1)
    shown = {key: np.asarray(value[:SHOWN_SEEDS if key.endswith(f"/{BEST[0]}") else 1], np.float16)
             for key, value in samples.items()}
    np.savez_compressed(os.path.join(outdir, f"{NAME}_samples.npz"), **shown)


def run(outdir: str, quick: bool = False, *, seeds: int | None = None, steps: int | None = None,
        methods: Sequence[str] | None = None) -> dict:
    """Trains and scores `methods` (default all) on both benchmarks; returns every stored result, "markdown", "png".

    The new results are stored in `outdir`, and the table and figure rebuilt from every stored result.
    `seeds` replaces each method's own number of seeds; `steps`, when given, replaces every method's steps.
    """
    methods = list(METHODS) if methods is None else list(methods)
    for name in methods:
        SAMPLERS.get(METHODS.get(name).sampler)  # ValueError "unknown mode-collapse method 'x'; valid names: ..."
    q = QUICK if quick else {}
    decay_fraction = q.get("decay_fraction")  # None: each method's own
    model = {k: q.get(k, v) for k, v in MODEL.items()}
    n_samples = q.get("n_samples", N_SAMPLES)
    refine = {k: q.get(k, v) for k, v in REFINE.items()}
    machine = _machine()

    def method_steps(name: str, dataset: str) -> int:
        return steps or q.get("steps") or dict(METHODS[name].steps).get(dataset, STEPS[dataset])

    def method_seeds(name: str) -> int:
        return seeds or q.get("seeds") or METHODS[name].seeds

    def method_config(name: str, dataset: str) -> ml_collections.ConfigDict:
        return make_config(dataset, METHODS[name], method_steps(name, dataset), model, decay_fraction)

    stored, stored_samples = _load(outdir)
    for dataset, kwargs in DATASETS.items():
        dist = toy.get(dataset, **kwargs)
        data = np.asarray(dist.sample(jax.random.key(0), n_samples))
        reference = np.asarray(dist.sample(jax.random.key(REFERENCE_SEED), n_samples))
        stored.setdefault(dataset, {})["data"] = {"runs": [_scores(data, dist, reference)], "seeds": [0],
                                                   "skipped": [0], "fingerprint": str(n_samples)}
        stored_samples[f"{dataset}/data"] = data[None]
        trained = {}  # training config → (engine, states, skipped, seconds): samplers of one training share it
        for name in methods:
            method, cfg = METHODS[name], method_config(name, dataset)
            seed_list = list(range(method_seeds(name)))
            print(f"  {dataset} / {name}: {len(seed_list)} seed(s) × {cfg.train.steps} steps, "
                  f"sampler {method.sampler}", flush=True)
            train_key = (json.dumps(cfg.to_dict(), sort_keys=True, default=str), tuple(seed_list))
            if train_key not in trained:
                start = time.perf_counter()
                engine, states, skipped = train_states(cfg, seed_list, [cfg.train.steps])
                trained[train_key] = (engine, [s[-1] for s in states], skipped, time.perf_counter() - start)
            engine, states, skipped, train_s = trained[train_key]
            start = time.perf_counter()
            samples, statistic = SAMPLERS[method.sampler](engine, states, seed_list, dist, cfg.model.latent_dim,
                                                          n_samples, refine)
            sample_s = time.perf_counter() - start
            stored[dataset][name] = {
                "runs": [_scores(s, dist, reference) for s in samples], "seeds": seed_list, "skipped": skipped.tolist(),
                "steps": int(cfg.train.steps), "train_s": train_s, "sample_s": sample_s, "statistic": statistic,
                "machine": machine, "fingerprint": _fingerprint(cfg, method, n_samples, refine)}
            stored_samples[f"{dataset}/{name}"] = np.asarray(samples[:SHOWN_SEEDS], np.float32)
    _save(outdir, stored, stored_samples)

    # Rebuild from every stored result that matches the current settings.
    current, stale = {}, []
    for dataset in DATASETS:
        current[dataset] = {"data": stored[dataset]["data"]}
        for name in METHODS:
            entry = stored.get(dataset, {}).get(name)
            if entry is None:
                continue
            if entry["fingerprint"] != _fingerprint(method_config(name, dataset), METHODS[name], n_samples, refine):
                stale.append(f"{dataset}/{name}")
                continue
            current[dataset][name] = entry
    shown = [name for name in METHODS if all(name in current[d] for d in DATASETS)]
    figures = []
    for dataset, kwargs in DATASETS.items():
        dist = toy.get(dataset, **kwargs)
        panels = []
        for name in shown:
            entry, pts = current[dataset][name], np.asarray(stored_samples[f"{dataset}/{name}"], np.float32)
            n_panels = len(pts) if name == BEST[0] else 1  # every shown seed of the best recipe, else seed 0
            for seed, run_samples, r in zip(entry["seeds"][:n_panels], pts, entry["runs"]):
                title = f"{name}\nseed {seed}: {r['modes']}/{len(dist.means)}, {100 * r['hq']:.0f}% HQ"
                panels.append((title, run_samples))
        if not panels:
            continue
        lim = 1.5 if dataset == "ring8" else 5.5
        figures.append(plotting.scatter_grid(os.path.join(outdir, f"{NAME}_{dataset}.png"), panels,
                                             centers=np.asarray(dist.means), ncols=5, lim=lim))
    png = _stack_pngs(common.png_path(outdir, NAME), figures) if figures else common.png_path(outdir, NAME)
    zoom = _zoom_figure(outdir, current, stored_samples)
    markdown = _markdown(current, shown, stale, model, n_samples, decay_fraction, refine)
    common.write_markdown(outdir, NAME, markdown)
    return {"results": current, "markdown": markdown, "png": png, "figures": figures, "zoom": zoom, "stale": stale}


def _generator_samples(engine, states, seed_list, dist, latent_dim, n_samples, refine):
    """Per seed: G(z) for the seed's n_samples fixed latents, with the sampling parameters (the EMA when on)."""
    generate = engine_lib.make_sampler(engine)
    return [np.asarray(generate(engine_lib.sampling_params(s), latents(seed, n_samples, latent_dim)))
            for seed, s in zip(seed_list, states)], []


def _critic_samples(kind, engine, states, seed_list, dist, latent_dim, n_samples, refine):
    """Per seed: n_samples samples by DRS or MH-GAN (`make_refined_sampler`) and the sampler's statistic."""
    sample = make_refined_sampler(engine, dist, latent_dim, n_samples, kind, refine)
    out, statistic = [], []
    for seed, state in zip(seed_list, states):
        key = jax.random.fold_in(jax.random.key(seed + 1), 1)  # independent of the generator's latents
        samples, stat = sample(state, key)
        if kind == "drs" and float(stat) * refine["proposals"] * n_samples < n_samples:
            raise RuntimeError(f"DRS accepted only {float(stat):.4f} of {refine['proposals']} × {n_samples} "
                               f"proposals (seed {seed}), fewer than {n_samples}: raise REFINE['proposals']")
        out.append(np.asarray(samples))
        statistic.append(float(stat))
    return out, statistic


# How a method draws its samples from its trained states: (engine, states, seeds, dist, latent_dim, n_samples,
# refine) -> (per-seed samples, per-seed statistic).
SAMPLERS: Registry[Callable] = Registry("mode-collapse sampler", {
    "generator": _generator_samples,
    "drs": functools.partial(_critic_samples, "drs"),
    "mh": functools.partial(_critic_samples, "mh"),
})


def _markdown(results, methods, stale, model, n_samples, decay_fraction, refine) -> str:
    def headers(dataset):
        return ["method", "seeds", f"modes (/{len(toy.get(dataset, **DATASETS[dataset]).means)})", "HQ %",
                "rev-KL", "precision", "recall", "density", "coverage"]

    def row(dataset, name):
        runs = results[dataset][name]["runs"]
        cells = [name if name != "data" else f"data itself ({n_samples} samples)",
                 "–" if name == "data" else str(len(runs)),
                 _mean_std([r["modes"] for r in runs], digits=1), _mean_std([r["hq"] for r in runs], 100, 1),
                 _mean_std([r["reverse_kl"] for r in runs], digits=3)]
        # "–": stored before the k-NN columns existed (rerun the method to fill them)
        return cells + [_mean_std([r[key] for r in runs], digits=3) if key in runs[0] else "–" for key in KNN_COLUMNS]

    def tables(names):
        out = []
        for dataset in DATASETS:
            out += [f"{dataset}:", "", common.table(headers(dataset), [row(dataset, m) for m in names]), ""]
        return out

    best = [m for m in BEST if m in methods]
    others = [m for m in methods if m not in BEST]

    def cost(name):
        ring, grid = (results[d][name] for d in DATASETS)
        train_s = ring["train_s"] + grid["train_s"]
        sample_s = ring["sample_s"] + grid["sample_s"]
        stat = {"drs": "accepted {:.0f} %", "mh": "{:.1f} accepted proposals per chain"}.get(METHODS[name].sampler)
        stats = "–" if stat is None else " / ".join(
            stat.format((100 if METHODS[name].sampler == "drs" else 1) * np.mean(results[d][name]["statistic"]))
            for d in DATASETS)
        return [name, f"{ring['steps']} / {grid['steps']}",
                _mean_std([r["within_1sd"] for r in ring["runs"]], 100, 1),
                _mean_std([r["within_1sd"] for r in grid["runs"]], 100, 1),
                f"{train_s:.0f}", f"{sample_s:.0f}", f"{train_s + sample_s:.0f}", stats]

    cost_headers = ["method", "steps ring / grid", "ring ≤1σ %", "grid ≤1σ %", "training s", "sampling s",
                    "total s (ring + grid)", "sampler statistic (ring / grid)"]
    def overrides(method):
        text = [", ".join(f"{k}={v}" for k, v in method.overrides)]
        text += [f"{d}: " + ", ".join(f"{k}={v}" for k, v in o) for d, o in method.dataset_overrides]
        text += [f"{d}: λ × {factor:g} from the learning-rate decay on" for d, factor in method.penalty_decay]
        text += [f"{d}: the last {fraction:.0%} of the steps decayed" for d, fraction in method.decay_fraction]
        return "; ".join(t for t in text if t) or "–"

    described = [[f"`{name}`", METHODS[name].preset, overrides(METHODS[name]), METHODS[name].sampler,
                  METHODS[name].description] for name in methods]
    published = [[name, *(_anchor(v) for v in ring), *(_anchor(v) for v in grid)] for name, ring, grid in PUBLISHED]
    per_seed = [[f"{d} / {m}", " ".join(str(r["modes"]) for r in results[d][m]["runs"]),
                 " ".join(f"{100 * r['hq']:.0f}" for r in results[d][m]["runs"]),
                 " ".join(f"{r['reverse_kl']:.3f}" for r in results[d][m]["runs"]),
                 " ".join(f"{r['recall']:.2f}" if "recall" in r else "–" for r in results[d][m]["runs"]),
                 " ".join(f"{r['coverage']:.2f}" if "coverage" in r else "–" for r in results[d][m]["runs"]),
                 sum(results[d][m]["skipped"])]
                for d in DATASETS for m in methods]
    machines = sorted({results[d][m]["machine"] for d in DATASETS for m in methods})
    fraction = DECAY_FRACTION if decay_fraction is None else decay_fraction
    decay = ("constant learning rates" if fraction <= 0 else
             f"the last {fraction:.0%} of the steps at {DECAY_FACTOR:g} × the preset's learning rates (unless a "
             "method says otherwise)")
    lines = [
        f"Ring: 8 Gaussians, radius 1, std 0.01; grid: 25 Gaussians, spacing 2, std 0.05; {n_samples} samples per "
        f"run; HQ = within {HQ_THRESHOLD:g}σ of the nearest mean; a mode is captured by ≥ 1 HQ sample (VEEGAN); "
        "rev-KL = KL(HQ mode histogram ‖ uniform) (PacGAN). Mean ± std over the seeds shown (seed 0, 1, …). "
        f"MLP width {model['width']}, depth {model['depth']}, latent {model['latent_dim']}, batch "
        f"{model['batch_size']}; {decay}. Precision/recall (k = {PR_K}, Kynkäänniemi et al. 2019) and "
        f"density/coverage (k = {DC_K}, Naeem et al. 2020) against {n_samples} fresh samples of the data; the data "
        f"row is their ceiling. Measured on: {'; '.join(machines) or '–'}.",
        "",
    ]
    if best:
        lines += ["The best recipe:", "", *tables(("data", *best))]
    lines += ["Every method:", "", *tables(("data", *others)),
              "Over-concentration check and cost: ≤1σ % = share of samples within 1σ of their nearest mean (the data: "
              "1 − e^{−0.5} = 39.3 %; far above it, the model concentrates on the mode centres); seconds of "
              "training (all seeds; methods with the same config share one training, counted in each) and of "
              "sampling (DRS / MH: critic refit, calibration, proposals):", "",
              common.table(cost_headers, [cost(m) for m in (*best, *others)]), "",
              "Methods (presets of `experiments/configs/common.py`, overrides of their config, sampler):", "",
              common.table(["method", "preset", "overrides", "sampler", "what"], described), "",
              f"DRS / MH-GAN: the critic trained on alone for {refine['refit_steps']} steps (logistic loss, no "
              f"penalty, Adam {refine['refit_learning_rate']:g}{' decayed to 0 on a cosine' * refine['refit_cosine']}, "
              f"batch {refine['refit_batch']}) against the "
              f"sampling generator, logits calibrated on {refine['calibration']} held-out real and generated "
              f"samples; {refine['proposals']} × {n_samples} proposals; DRS accepts with σ(F − γ), F = d − "
              "log(1 − exp(d − ε)), d = min(l − M, 0) (Azadi et al. 2019), M = the "
              f"{refine['max_logit_percentile']:g}th percentile of the logits l, γ = "
              + ("none (accept with exp(d))" if refine["gamma_percentile"] is None else
                 f"the {refine['gamma_percentile']:g}th percentile of F") +
              f"; MH: {n_samples} chains of {refine['proposals']} proposals, each starting at its first.", "",
              "Published (same distributions and protocol, much longer training; VEEGAN: Srivastava et al. 2017, "
              "Table 1, 5 runs; PacGAN: Lin et al. 2018, Table 1, 10 runs; GDPP: Elfeki et al. 2019, Table 1):", "",
              common.table(["published", "ring modes (/8)", "ring HQ %", "ring rev-KL", "grid modes (/25)",
                            "grid HQ %", "grid rev-KL"], published), "",
              "Per seed (modes captured; HQ %; rev-KL; recall; coverage; non-finite steps skipped):", "",
              common.table(["dataset / method", "modes per seed", "HQ % per seed", "rev-KL per seed",
                            "recall per seed", "coverage per seed", "skipped steps"], per_seed)]
    if stale:
        lines += ["", f"Stored results not shown (computed with other settings; rerun them): {', '.join(stale)}."]
    return "\n".join(lines)


if __name__ == "__main__":
    common.main(run, NAME, lambda: dict(seeds=SEEDS_FLAG.value, methods=METHODS_FLAG.value))
