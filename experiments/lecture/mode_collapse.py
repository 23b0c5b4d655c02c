r"""Claim 6: mode collapse on the ring of 8 and the grid of 25 — GAN vs unrolled GAN vs WGAN (clip, GP).

Each method (a preset of experiments/configs/common.py METHODS) is trained on the published benchmark
distributions themselves — ring: 8 Gaussians of std 0.01 on the unit circle; grid: 25 Gaussians of std 0.05
on {−4, −2, 0, 2, 4}² — and evaluated with the published protocol (NOTES.md): 2500 generated samples, a
sample is high quality (HQ) within 3σ of its nearest mean, a mode is captured when it is the nearest mean of
at least one HQ sample (VEEGAN), reverse KL of the HQ mode histogram to uniform (PacGAN). Mean ± std over
seeds, next to the published numbers and to 2500 samples of the data itself (the ceiling, ≈ 98.9 % HQ).

Training protocol, the same for every method: MLP generator and critic (width 64, depth 4, latent 2,
batch 256), `STEPS[dataset]` generator steps — 2000 on the ring, 4000 on the grid — the last
`DECAY_FRACTION` of them at `DECAY_FACTOR` × each preset's learning rates. The step decay matters: with
std 0.01 a high-quality sample lies within 0.03 of a mode centre, and at a constant learning rate of 1e-3
the generator keeps moving by about that much (measured: gan_gp reaches ~70 % HQ on the ring after 3000
steps at 2e-3, 95 % after 1000 more at 2e-4). The grid needs the longer run and the fourth layer: a
generator with a 2-D latent maps one connected latent plane onto 25 clusters, and early in training it
lays samples along rays through the modes (bridges between them); measured for gan_gp on the grid,
seeds 0–1: 2000 steps depth 3 → 20 % HQ, 4000 steps depth 3 → 70 %, 2000 depth 4 → 42 %, 3000 depth 4 →
73 %, 4000 depth 4 → 84 % (85 % over seeds 0–4), all 25 modes; width 128 (depth 3) costs about three times
as much per step for less (30 % at 2000 steps, 81 % at 4000); a longer decayed phase (last 50 %) or a larger
penalty weight (λ = 1) lowers HQ, λ = 0.01 raises it but drops modes. Cost on two busy CPU cores: 43
minutes for the whole table (measured 2571 s), most of it the unrolled GAN (43 ms per step) and the
WGANs (15–20 ms).
`gan_gp` (non-saturating GAN + gradient penalty) and its control `gan_fast` (the same GAN and optimizer,
no penalty) are the presets added for this benchmark; the others are the papers' settings.

    python -m experiments.lecture.mode_collapse --outdir=results/lecture [--quick]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import matplotlib.image
import ml_collections
import numpy as np

from experiments.configs import common as configs
from experiments.lecture import common
from gan_jax import metrics, parallel, plotting
from gan_jax import train as engine_lib
from gan_jax.data import make_source, toy

NAME = "mode_collapse"
METHODS = ("gan", "gan_fast", "unrolled", "wgan_clip", "wgan_gp", "gan_gp")
# The published benchmarks (NOTES.md, "Mode-coverage protocol of the published anchors").
DATASETS = {"ring8": dict(radius=1.0, std=0.01), "grid25": dict(spacing=2.0, std=0.05)}
N_SAMPLES = 2500
HQ_THRESHOLD = 3.0  # in units of the component std
SEEDS = 5
# Generator steps per dataset (the grid needs twice the ring's; see the module docstring).
STEPS = {"ring8": 2000, "grid25": 4000}
DECAY_FRACTION, DECAY_FACTOR = 0.25, 0.1
MODEL = dict(width=64, depth=4, latent_dim=2, batch_size=256, steps_per_call=50)
# Tests: seconds per method, mostly compilation (one program per method and dataset; shorter fused calls and
# one hidden layer compile about twice as fast).
QUICK = dict(seeds=1, steps=60, decay_fraction=0.0, width=16, depth=1, batch_size=64, steps_per_call=10,
             n_samples=500)

# (method, modes, HQ %, reverse KL) per dataset; None = not reported. VEEGAN: Srivastava et al. 2017, Table 1
# (mean over 5 runs); PacGAN: Lin et al. 2018, Table 1 (mean over 10 runs).
PUBLISHED = (
    ("GAN (VEEGAN Table 1)", (1, 99.3, None), (3.3, 0.5, None)),
    ("Unrolled GAN (VEEGAN Table 1)", (7.6, 35.6, None), (23.6, 16, None)),
    ("VEEGAN (VEEGAN Table 1)", (8, 52.9, None), (24.6, 40, None)),
    ("GAN (PacGAN Table 1)", (6.3, 98.2, 0.45), (17.3, 94.8, 0.70)),
    ("PacGAN2 (PacGAN Table 1)", (7.9, 95.6, 0.07), (23.8, 91.3, 0.13)),
    ("PacGAN4 (PacGAN Table 1)", (7.8, 95.9, 0.07), (24.8, 93.6, 0.04)),
)


def train_and_sample(
    cfg: ml_collections.ConfigDict,
    seeds: Sequence[int],
    at_steps: Sequence[int],
    n_samples: int,
    decay_from: int | None = None,
    decay_factor: float = DECAY_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """G(z_seed) for `n_samples` fixed latents after each of `at_steps` generator steps, per seed.

    Steps from `decay_from` on use `decay_factor` × the configured learning rates (the engine's "step"
    schedule for both roles, `with_step_decay`). One engine and compiled step serve every seed: the seed
    only sets the initial state (`cfg.seed`) and the latents (key seed + 1, as experiments/train.py samples them).

    Returns:
      samples (len(seeds), len(at_steps), n_samples, dim) and the number of non-finite (skipped) steps per seed.
    """
    if list(at_steps) != sorted(at_steps) or min(at_steps) < 0:
        raise ValueError(f"at_steps must be non-negative and increasing, got {list(at_steps)}")
    if decay_from is not None:
        cfg = with_step_decay(cfg, decay_from, decay_factor)
    source = make_source(cfg.data)
    mesh = parallel.make_mesh(1)
    arrays = parallel.replicate(source.arrays, mesh)
    engine = engine_lib.make_engine(cfg, source.shape)
    sampler = engine_lib.make_sampler(engine)
    compiled = {}

    def advance(state, n: int):
        if n not in compiled:
            compiled[n] = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=n)
        return compiled[n](state, arrays)

    samples, skipped = [], []
    for seed in seeds:
        run_cfg = cfg.copy_and_resolve_references()
        run_cfg.seed = int(seed)
        state = parallel.replicate(engine_lib.create_state(run_cfg, engine, source.shape), mesh)
        z = jax.random.normal(jax.random.key(run_cfg.seed + 1), (n_samples, cfg.model.latent_dim))
        done, bad, per_step = 0, 0, []
        for target in at_steps:
            while done < target:
                n = min(cfg.train.steps_per_call, target - done)
                state, chunk = advance(state, n)
                bad += int(np.sum(chunk["nonfinite"]))
                done += n
            per_step.append(np.asarray(sampler(engine_lib.sampling_params(state), z)))
        samples.append(per_step)
        skipped.append(bad)
    return np.asarray(samples), np.asarray(skipped)


def with_step_decay(cfg: ml_collections.ConfigDict, decay_from: int, factor: float) -> ml_collections.ConfigDict:
    """A copy of `cfg` whose learning rates (both roles) are multiplied by `factor` from generator step `decay_from` on."""
    cfg = cfg.copy_and_resolve_references()
    for role in ("generator", "critic"):
        cfg.optim[role].update(schedule="step", boundaries=(int(decay_from),), decay_factor=float(factor))
    return cfg


def make_config(dataset: str, method: str, steps: int, model: dict) -> ml_collections.ConfigDict:
    """The preset `method` on the published `dataset`, with `model`'s sizes (keys of MODEL) and `steps`."""
    cfg = configs.toy(dataset, method, None, **DATASETS[dataset])
    cfg.model.width, cfg.model.depth, cfg.model.latent_dim = model["width"], model["depth"], model["latent_dim"]
    cfg.data.batch_size = model["batch_size"]
    cfg.train.steps, cfg.train.steps_per_call = steps, model["steps_per_call"]
    return cfg


def _coverage(samples: np.ndarray, dist: toy.ToyDistribution) -> dict[str, float]:
    cover = metrics.mode_coverage(samples, dist.centers(), dist.std, threshold=HQ_THRESHOLD)
    return {"modes": int(cover.modes_captured), "hq": float(cover.high_quality_fraction),
            "reverse_kl": float(cover.reverse_kl)}


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


def run(outdir: str, quick: bool = False, *, seeds: int | None = None, steps: int | None = None,
        methods: Sequence[str] = METHODS) -> dict:
    """Trains every method on both benchmarks; returns per-run numbers, "markdown" and "png".

    `steps`, when given, replaces `STEPS` on both datasets.
    """
    q = QUICK if quick else {}
    n_seeds = seeds or q.get("seeds", SEEDS)
    steps_of = {d: steps or q.get("steps", STEPS[d]) for d in DATASETS}
    decay_fraction = q.get("decay_fraction", DECAY_FRACTION)
    model = {k: q.get(k, v) for k, v in MODEL.items()}
    n_samples = q.get("n_samples", N_SAMPLES)
    decay_of = {d: n - int(round(decay_fraction * n)) if decay_fraction > 0 else None for d, n in steps_of.items()}
    seed_list = list(range(n_seeds))

    results: dict[str, dict[str, dict]] = {}
    figures = []
    for dataset, kwargs in DATASETS.items():
        dist = toy.get(dataset, **kwargs)
        data = np.asarray(dist.sample(jax.random.key(0), n_samples))
        results[dataset] = {"data": {"runs": [_coverage(data, dist)], "skipped": [0]}}
        panels, steps, decay_from = [], steps_of[dataset], decay_of[dataset]
        for method in methods:
            print(f"  {dataset} / {method}: {n_seeds} seed(s) × {steps} steps", flush=True)
            cfg = make_config(dataset, method, steps, model)
            samples, skipped = train_and_sample(cfg, seed_list, [steps], n_samples, decay_from)
            runs = [_coverage(s[-1], dist) for s in samples]
            results[dataset][method] = {"runs": runs, "skipped": skipped.tolist()}
            for seed, run_samples, r in zip(seed_list[:5], samples, runs):
                title = f"{method}, seed {seed}: {r['modes']}/{len(dist.means)}, {100 * r['hq']:.0f}% HQ"
                panels.append((title, run_samples[-1]))
        lim = 1.5 if dataset == "ring8" else 5.5
        figures.append(plotting.scatter_grid(os.path.join(outdir, f"{NAME}_{dataset}.png"), panels,
                                             centers=np.asarray(dist.means), ncols=min(n_seeds, 5), lim=lim))
    png = _stack_pngs(common.png_path(outdir, NAME), figures)
    markdown = _markdown(results, methods, n_seeds, steps_of, decay_of, model, n_samples)
    common.write_markdown(outdir, NAME, markdown)
    return {"results": results, "markdown": markdown, "png": png, "figures": figures}


def _markdown(results, methods, n_seeds, steps_of, decay_of, model, n_samples) -> str:
    m_ring, m_grid = (len(toy.get(d, **k).means) for d, k in DATASETS.items())
    rows = []
    for method in ("data", *methods):
        cells = [method if method != "data" else f"data itself ({n_samples} samples)"]
        for dataset in DATASETS:
            runs = results[dataset][method]["runs"]
            cells += [_mean_std([r["modes"] for r in runs], digits=1), _mean_std([r["hq"] for r in runs], 100, 1),
                      _mean_std([r["reverse_kl"] for r in runs], digits=3)]
        rows.append(cells)
    headers = ["method", f"ring modes (/{m_ring})", "ring HQ %", "ring rev-KL",
               f"grid modes (/{m_grid})", "grid HQ %", "grid rev-KL"]
    published = [[name, *(_anchor(v) for v in ring), *(_anchor(v) for v in grid)] for name, ring, grid in PUBLISHED]
    per_seed = [[f"{d} / {m}", " ".join(str(r["modes"]) for r in results[d][m]["runs"]),
                 " ".join(f"{100 * r['hq']:.0f}" for r in results[d][m]["runs"]), sum(results[d][m]["skipped"])]
                for d in DATASETS for m in methods]
    schedule = {d: "constant learning rates" if decay_of[d] is None else
                f"steps {decay_of[d]}–{n} at {DECAY_FACTOR:g} × the preset's learning rates"
                for d, n in steps_of.items()}
    decay = "; ".join(f"{d}: {n} generator steps, {schedule[d]}" for d, n in steps_of.items())
    return "\n".join([
        f"Measured: mean ± std over {n_seeds} seed(s); {decay}; MLP width "
        f"{model['width']}, depth {model['depth']}, latent {model['latent_dim']}, batch {model['batch_size']}; "
        "methods are presets of `experiments/configs/common.py` (`gan_gp`: non-saturating GAN + gradient penalty, "
        "Fedus et al. 2018; `gan_fast`: the same GAN and optimizer without the penalty). "
        f"Ring: 8 Gaussians, radius 1, std 0.01; grid: 25 Gaussians, spacing 2, std 0.05; {n_samples} samples "
        f"per run; HQ = within {HQ_THRESHOLD:g}σ of the nearest mean; a mode is captured by ≥ 1 HQ sample "
        "(VEEGAN); rev-KL = KL(HQ mode histogram ‖ uniform) (PacGAN).",
        "",
        common.table(headers, rows),
        "",
        "Published (same distributions and protocol, much longer training; VEEGAN: Srivastava et al. 2017, "
        "Table 1, 5 runs; PacGAN: Lin et al. 2018, Table 1, 10 runs):",
        "",
        common.table(["published", *headers[1:]], published),
        "",
        "Per seed (modes captured; HQ %; non-finite steps skipped):",
        "",
        common.table(["dataset / method", "modes per seed", "HQ % per seed", "skipped steps"], per_seed),
    ])


if __name__ == "__main__":
    common.main(run, NAME)
