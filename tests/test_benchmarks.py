"""The pieces of benchmarks/train_speed.py that can be checked without timing anything: the FLOP counter, the
interleaved timing loop's bookkeeping, and the report.

References: a dot of (m, k) by (k, n) is 2mkn FLOPs; a 1-D convolution of n inputs with a kernel of size k
and padding p on both sides at stride 1 has n + 2p − k + 1 outputs, and the taps that land on the input (not on
padding) are counted by hand below; a scan of length L runs its body L times; XLA's `cost_analysis()` of one
unpadded dot equals 2mkn.
"""

import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not an installed package

from benchmarks import flops, report, train_speed  # noqa: E402


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
