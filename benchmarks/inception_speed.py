"""Inception feature extraction speed: gan_jax's jitted FID InceptionV3 next to pytorch-fid's, on this machine.

Both networks hold the same random weights in pytorch-fid's layout (built as tests/test_inception.py builds its
reference; speed does not depend on the values) and get the same batches of --size² images, resized to 299×299
inside the network:
  gan_jax      `inception.make_extractor(params, batch_size)`: jitted with gan_jax's CPU compiler options over this
               process's devices, NumPy [−1, 1] images in, NumPy (pool, logits) out;
  pytorch-fid  `InceptionV3([3], resize_input=True, normalize_input=True)` in eval mode under torch.no_grad(),
               on torch tensors of the same images in [0, 1], with torch.set_num_threads(--threads).
Each is run once untimed (compilation, allocator warm-up), then timed in alternating blocks of --batches batches
(order swapped every repeat); the table gives images/s as median [min–max] of --repeats blocks and the per-repeat
ratio. XLA:CPU sizes its own thread pool to the machine's cores; the header reports both thread counts and the
load average, since other work on the machine lowers both rates.

    python benchmarks/inception_speed.py                        # batch 50, 32×32 inputs, 3 repeats of 2 batches
    python benchmarks/inception_speed.py --batch 50 --batches 4 --repeats 5 --out results/inception_speed.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "tests"):  # `python benchmarks/inception_speed.py` from anywhere; the torch reference
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402
from gan_jax import inception  # noqa: E402
from test_inception import pytorch_fid_model  # noqa: E402  (imports torch through tests/torch_reference.py)
from torch_reference import torch  # noqa: E402


def timed(fn, calls: int) -> float:
    """Seconds for `calls` calls of fn (each returns only when its result is on the host)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50, help="images per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per implementation")
    parser.add_argument("--size", type=int, default=32, help="input height and width (resized to 299 inside)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    parser.add_argument("--out", default="", help="also write the markdown here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    header = report.machine_lines(torch.__version__, args.threads)
    header.append(f"- XLA: backend {jax.default_backend()}, {jax.local_device_count()} device(s), its own thread "
                  f"pool over {os.cpu_count()} cores; batch {args.batch} of {args.size}×{args.size}×3 → 299×299")
    with tempfile.TemporaryDirectory() as hub:
        model, path, _ = pytorch_fid_model(hub)
        params = inception.load(path, sha256=None)
    images = np.random.default_rng(0).uniform(0, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    ours_input, torch_input = 2 * images - 1, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    extract = inception.make_extractor(params, batch_size=args.batch)

    def ours():
        extract(ours_input)

    def theirs():
        with torch.no_grad():
            model(torch_input)[0].numpy()

    runners = {"gan_jax (jit)": ours, "pytorch-fid (eager)": theirs}
    start = time.perf_counter()
    for name, fn in runners.items():
        print(f"warm-up {name}: {timed(fn, 1):.1f} s", file=sys.stderr, flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(args.repeats):
        for name in (list(runners) if repeat % 2 == 0 else list(runners)[::-1]):
            rates[name].append(args.batch * args.batches / timed(runners[name], args.batches))
            print(f"repeat {repeat + 1}: {name} {rates[name][-1]:.2f} images/s", file=sys.stderr, flush=True)
    names = list(runners)
    ratios = report.paired_ratio(rates[names[0]], rates[names[1]])
    lines = ["# Inception feature extraction (FID InceptionV3, 2048-d pool + 1008 logits)", "", *header,
             f"- load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; timed for "
             f"{time.perf_counter() - start:.0f} s", "",
             *report.table(["implementation", "images/s", "gan_jax / pytorch-fid"],
                           [[names[0], report.median_spread(rates[names[0]]), report.median_spread(ratios)],
                            [names[1], report.median_spread(rates[names[1]]), "1"]]),
             "", *report.table(["goal", "target", "measured", "status"],
                               [report.goal_row("gan_jax vs pytorch-fid, images/s", ratios, 1.0)])]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown)
    return markdown


if __name__ == "__main__":
    main()
