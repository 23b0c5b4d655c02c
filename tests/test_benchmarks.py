"""The pieces of benchmarks/train_speed.py and image_speed.py that can be checked without timing anything: the FLOP
counter, the interleaved timing loop's bookkeeping, the reports, the PyTorch image nets' sizes, and tiny image steps.

References: a dot of (m, k) by (k, n) is 2mkn FLOPs; a 1-D convolution of n inputs with a kernel of size k
and padding p on both sides at stride 1 has n + 2p − k + 1 outputs, and the taps that land on the input (not on
padding) are counted by hand below; a scan of length L runs its body L times; XLA's `cost_analysis()` of one
unpadded dot equals 2mkn.
"""

import math
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not an installed package

from benchmarks import engine_steps, flops, image_speed, report, train_speed  # noqa: E402


def _flops(fn, *args) -> float:
    return flops.jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def test_jaxpr_flops_counts_dots_and_scans():
    a, b = jnp.ones((4, 6)), jnp.ones((6, 5))
    assert _flops(jnp.dot, a, b) == 2 * 4 * 6 * 5
    assert flops.xla_flops(jax.jit(jnp.dot), a, b)[0] == 2 * 4 * 6 * 5

    def scanned(x):
        return jax.lax.scan(lambda c, _: (c @ jnp.ones((5, 5)), None), x, None, length=7)[0]

    assert _flops(scanned, jnp.ones((3, 5))) == 7 * 2 * 3 * 5 * 5


def test_jaxpr_flops_skips_convolution_taps_on_padding():
    x, w = jnp.ones((1, 1, 3)), jnp.ones((1, 1, 3))  # (batch, features, width): n = 3, k = 3
    valid = lambda x, w: jax.lax.conv_general_dilated(x, w, (1,), "VALID")  # noqa: E731
    padded = lambda x, w: jax.lax.conv_general_dilated(x, w, (1,), [(1, 1)])  # noqa: E731
    assert _flops(valid, x, w) == 2 * 3  # one output, 3 taps
    # p = 1: outputs 0, 1, 2 see 2, 3, 2 input elements (the other taps fall on padding).
    assert _flops(padded, x, w) == 2 * (2 + 3 + 2)


def test_measure_interleaves_and_reports_generator_steps_per_second(monkeypatch):
    monkeypatch.setattr(train_speed, "PAUSE_S", 0.0)
    order = []

    def fake(name, seconds_per_call, steps_per_call):
        def run(calls):
            order.append(name)
            return calls * seconds_per_call

        return train_speed.Runner(name, steps_per_call, run)

    runners = [fake("a", 0.01, 1), fake("b", 0.02, 10)]
    rates = train_speed.measure(runners, repeats=3, block_s=0.1)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # one sizing call each, then rotated repeats
    assert rates["a"] == pytest.approx([100.0] * 3)  # 1 step / 0.01 s
    assert rates["b"] == pytest.approx([500.0] * 3)  # 10 steps / 0.02 s


def test_quick_flag_sets_short_repeats_and_no_compile():
    args = train_speed.parse_args(["--quick", "--fused-k", "50"])
    assert (args.repeats, args.block_s, args.no_compile, args.fused_k) == (3, 0.4, True, 20)
    assert train_speed.parse_args([]).widths == "64,128,512"


def test_report_renders_every_section_and_judges_goals():
    k = 20
    names = report.impl_names(k)
    ring = {n: [100.0, 110.0, 90.0] for n in names if "orch" not in n}
    ring[names[1]] = [200.0, 220.0, 180.0]  # fused: 2× K=1
    ring[flops.MATMUL] = [10.0, 10.0, 10.0]
    result = dict(rates=ring, flops=dict(critic=0.04, generator=0.02, pieces=0.22, analytic=0.2),
                  compile_s={names[0]: 1.5}, jaxpr_engine=0.21, scanned_engine=0.06, load=1.0)
    args = types.SimpleNamespace(fused_k=k, repeats=3, block_s=0.4, devices="1,2")
    text = report.render(args, ["# header"], {64: result}, None, {"1": [50.0], "2": [75.0]}, (100.0, 100.0),
                         ["a note"], 12.0)
    for heading in ("## ring8 WGAN-GP", "## Ratios", "## Achieved GFLOP/s", "## Data-parallel", "## Goals",
                    "## Notes"):
        assert heading in text
    assert "## digits" not in text
    assert f"| K={k} fused ≥ 1.1× K=1, width 64 | ≥ 1.1× | 2.00× [2.00–2.00] | met |" in text
    assert "| engine ahead of torch.compile, width 64 | ≥ 1× | – | not measured |" in text
    assert "| 2 | 75 [75–75] | 1.5 [1.5–1.5] |" in text  # speed-up vs 1 device
    assert "- a note" in text and "engine K=1 at width 64: 1.5 s" in text
    assert report.median_spread([]) == "–" and report.median_spread([1.0, 3.0, 2.0]) == "2 [1–3]"
    assert report.goal_row("g", [0.5], 1.0)[-1] == "**not met**"


# benchmarks/image_speed.py: the image-scale steps against PyTorch. References: the published parameter counts of
# the SNGAN ResNet 32 pair (Mimicry's SNGANGenerator32 / SNGANDiscriminator32: 4,276,739 / 1,053,825) and of
# PyTorch's DCGAN example at 64×64 (nz = 100, ngf = ndf = 64: 3,576,704 / 2,765,568).
PUBLISHED_COUNTS = {"sngan32": (4_276_739, 1_053_825), "dcgan64": (3_576_704, 2_765_568)}


def _gan_jax_counts(cfg) -> tuple[int, int]:
    """Trained parameters of the config's generator and critic (the "params" collection), from shapes only."""
    from gan_jax import models

    size = cfg.data.image_size
    generator, critic = models.build(cfg.model, (size, size, image_speed.CHANNELS))
    key = jax.random.key(0)
    g = jax.eval_shape(generator.init, key, jnp.zeros((2, cfg.model.latent_dim)))
    c = jax.eval_shape(critic.init, key, jnp.zeros((2, size, size, image_speed.CHANNELS)))
    return image_speed.parameter_counts(g["params"]), image_speed.parameter_counts(c["params"])


@pytest.mark.parametrize("name", list(image_speed.STEPS))
def test_torch_image_nets_have_gan_jax_parameter_counts(name):
    pytest.importorskip("torch", reason="PyTorch is optional (pip install torch==2.13.0)")
    from benchmarks import torch_image_nets

    cfg = image_speed.step_config(name, "float32", 0)
    generator, critic = torch_image_nets.build_pair(image_speed.torch_spec(cfg, "cpu"))
    torch_counts = (torch_image_nets.parameter_count(generator), torch_image_nets.parameter_count(critic))
    assert _gan_jax_counts(cfg) == torch_counts == PUBLISHED_COUNTS[name]


@pytest.mark.parametrize("name", list(image_speed.STEPS))
def test_tiny_torch_image_step_gives_finite_losses(name):
    torch = pytest.importorskip("torch", reason="PyTorch is optional (pip install torch==2.13.0)")
    from benchmarks import torch_image_nets

    cfg = image_speed.step_config(name, "float32", 2)
    cfg.data.batch_size = 4
    torch.manual_seed(0)
    step = torch_image_nets.make_step(image_speed.torch_spec(cfg, "cpu"))
    losses = [float(x) for x in step()]
    assert all(map(math.isfinite, losses)), losses


def test_tiny_engine_image_step_on_synthetic_images_gives_finite_losses():
    cfg = image_speed.step_config("dcgan64", "float32", 2)
    cfg.data.batch_size, cfg.train.unroll_loops = 4, False  # the smallest program to compile
    source = engine_steps.synthetic_images(8, 64)
    assert source.arrays.x.shape == (8, 64, 64, 3) and source.arrays.x.dtype == jnp.uint8
    step, state, arrays = engine_steps.compiled_step(cfg, 1, source=source)
    _, metrics = step(state, arrays)
    assert all(math.isfinite(float(metrics[k][0])) for k in ("critic_loss", "generator_loss"))
    assert not bool(metrics["nonfinite"][0])


def test_image_speed_quick_flag_and_report():
    args = image_speed.parse_args(["--quick", "--no_torch"])
    assert (args.repeats, args.skip_compile, args.channels, args.torch_device) == (2, True, 8, "cpu")
    memory = engine_steps.XlaMemory(temp=3.0, argument=2.0, output=1.0, alias=1.0)
    cfg = image_speed.step_config("sngan32", "float32", 8)
    rates = {image_speed.ENGINE: [2.0, 3.0], image_speed.EAGER: [1.0, 2.0]}
    result = dict(cfg=cfg, gflop=10.0, memory=memory, compile_s={image_speed.ENGINE: 1.5}, params=(10, 20),
                  rates=rates, load=1.0)
    text = image_speed.render(args, ["# header"], {"sngan32": result}, ["a note"], 3.0)
    row = "| sngan32 (batch 64, n_critic 5) | 10 / 20 | 10 | 2.5 [2–3] | 1.5 [1–2] | – | 1.75 [1.5–2] | – |"
    assert row in text  # params, GFLOP/step, engine, eager, no torch.compile, engine / eager, –
    assert "| 3.0 + 2.0 + 1.0 = 6.0 |" in text  # temp + args + out MiB
    assert "| engine ≥ 1.0× PyTorch eager, sngan32 | ≥ 1× | 1.75× [1.50–2.00] | met |" in text
    assert "- a note" in text and "gan_jax engine sngan32: 1.5 s" in text


def test_digits_metrics_split_is_disjoint_and_covers_every_row_once():
    import numpy as np

    from benchmarks import digits_metrics

    samples, reference = digits_metrics.split(11, 4, np.random.default_rng(0))
    assert (len(samples), len(reference)) == (4, 7)
    assert sorted([*samples.tolist(), *reference.tolist()]) == list(range(11))
    with pytest.raises(ValueError, match="n_samples=11"):
        digits_metrics.split(11, 11, np.random.default_rng(0))
    assert digits_metrics.mean_std([1.0, 3.0]) == "2 ± 1.41" and digits_metrics.mean_std([0.5]) == "0.5"
    args = digits_metrics.parse_args(["--quick"])
    assert (args.seeds, args.steps, args.splits) == (2, 100, 2)
    assert args.workdir_root.endswith("digits_metrics_quick")


def test_digits_metrics_floor_of_identical_and_of_shifted_sets_matches_hand_values():
    """Samples identical to the reference: FD = 0, precision = recall = coverage = 1, and KID (one subset of all m
    rows of each side, so both sides are the same set) = 2(S − T)/(m(m − 1)) − 2S/m², S the sum and T the trace of
    the kernel matrix k(x, y) = (xᵀy/d + 1)³. Samples = reference + c: the covariances are equal, so FD = ‖c‖²; the
    samples' logits all zero: p(y|x) is uniform, so IS = 1 (IS is the samples' alone)."""
    import numpy as np

    from benchmarks import digits_metrics
    from gan_jax import scoring

    rng = np.random.default_rng(0)
    m, d = 60, 8
    x, logits = rng.normal(size=(m, d)), rng.normal(size=(m, 10))
    cfg = digits_metrics.run_config(0)
    cfg.eval.kid_subsets = 1
    names = ("fid", "kid", "is", "pr", "dc")
    rows, others = np.arange(m), np.arange(m, 2 * m)
    same = digits_metrics.score_rows(scoring.FeatureSet(np.concatenate([x, x]), np.concatenate([logits, logits])),
                                     rows, others, names, cfg)
    kernel = (x @ x.T / d + 1.0) ** 3
    s, t = kernel.sum(), np.trace(kernel)
    assert same["classifier/fd"] == pytest.approx(0.0, abs=1e-9)
    assert same["classifier/kid"] == pytest.approx(2 * (s - t) / (m * (m - 1)) - 2 * s / m**2, rel=1e-9)
    assert same["classifier/precision"] == same["classifier/recall"] == same["classifier/coverage"] == 1.0
    c = np.linspace(-1.0, 2.0, d)
    shifted = digits_metrics.score_rows(
        scoring.FeatureSet(np.concatenate([x + c, x]), np.concatenate([np.zeros_like(logits), logits])), rows,
        others, ("fid", "is"), cfg)
    assert shifted["classifier/fd"] == pytest.approx(float(c @ c), rel=1e-9)
    assert shifted["classifier/is"] == pytest.approx(1.0, abs=1e-12)  # the samples' p(y|x), not the reference's
