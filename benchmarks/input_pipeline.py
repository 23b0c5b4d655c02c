"""Input pipelines: host memory at scale, streamed input throughput against what the step consumes, and the
streamed digits run against the device-resident one.

1. Host memory at scale: image folders of 10,000 and 50,000 64×64×3 PNGs (a random colour gradient, a blob
   and Gaussian noise, deterministic from --seed; unlabelled; the larger folder hard-links the smaller one's
   files) are prepared with `folders.prepare(image_size=64)`; each then trains --steps generator steps of a
   64×64 conv WGAN-GP (experiments/configs/folder_gan.py with NET64 and TRAIN) through the CLI, once with
   data.pipeline=streamed and once with device, one process per run: its peak RSS (`os.wait4`), wall time
   and steps/s from metrics.jsonl. One more process only imports the trainer and opens the records.
2. Input throughput vs consumption, for the full digits config and the 64×64 net on the largest dataset,
   built in-process as gan_jax/trainer.py::_train builds them: images/s `pipeline.StreamedBatches` delivers
   alone over the trainer's schedule (and with `pipeline.to_global`), images/s the step consumes (steps/s ×
   batch × n_critic, fed from placed batches), the share of a streamed training loop's time spent waiting
   for the feed, and the cost of each piece of one step's read.
3. Streamed digits steps/s vs the device path, in this process, in alternating blocks of equal steps.

    python benchmarks/input_pipeline.py          # about 35 min on 2 busy CPU cores -> results/input_pipeline.md
    python benchmarks/input_pipeline.py --quick  # 1,000 / 5,000 images, 40 steps, short blocks (about 15 min)

Every train step is called twice before it is timed: the second call compiles again (see the report's notes).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/input_pipeline.py` from anywhere
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from benchmarks import report  # noqa: E402
from gan_jax import engine as engine_lib, parallel, step_inputs, trainer  # noqa: E402
from gan_jax.data import Batch, folders, make_source, pipeline  # noqa: E402

NET64 = {"model.base_width": 4, "data.batch_size": 16}  # the 64×64 net: ~0.4 s a step on 2 busy cores
TRAIN = {"train.steps_per_call": 1, "train.sample_every": 0, "train.eval_samples": 500}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows), ""]


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def configure(cfg, overrides: dict):
    for key, value in overrides.items():
        section, field = key.split(".")
        cfg[section][field] = value
    return cfg


# --- 1. host memory at scale --------------------------------------------------------------------------------

def write_images(folder: Path, start: int, stop: int, seed: int) -> None:
    """PNGs number start .. stop − 1: a gradient between two random colours, a blob, noise σ = 4."""
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64].astype(np.float32) / 63
    for i in range(start, stop):
        rng = np.random.default_rng((seed, i))
        c0, c1, blob = rng.uniform(0, 255, (3, 3)).astype(np.float32)
        angle, (bx, by), r = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8, 2), rng.uniform(0.05, 0.3)
        t = ((np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)) / 1.42 + 0.5)[..., None]
        w = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * r * r))[..., None]
        img = (1 - w) * (c0 + (c1 - c0) * t) + w * blob + rng.normal(0, 4, (64, 64, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png", compress_level=1)


def make_datasets(root: Path, sizes: list[int], seed: int) -> list[dict]:
    """A folder of each size (hard-linking the previous one's files) and its prepared dataset."""
    out, previous = [], []
    for n in sorted(sizes):
        folder = root / f"images_{n}"
        folder.mkdir()
        t0 = time.perf_counter()
        for path in previous:
            os.link(path, folder / path.name)
        log(f"writing {n - len(previous)} PNGs into {folder}")
        write_images(folder, len(previous), n, seed)
        made, t0 = time.perf_counter() - t0, time.perf_counter()
        prepared = folders.prepare(folder, f"ipb_{n}", data_dir=root / "data", image_size=64, progress=False)
        previous = sorted(folder.iterdir())
        out.append(dict(n=n, name=prepared.name, made_s=made, prepare_s=time.perf_counter() - t0,
                        bytes=prepared.num_bytes, png_bytes=sum(p.stat().st_size for p in previous)))
    return out


def run_child(cmd: list[str], log_path: Path) -> dict:
    """cmd run from the repository root: its wall seconds, peak RSS (MB) and exit code."""
    with open(log_path, "w") as out:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc:
        print(log_path.read_text()[-3000:], file=sys.stderr)
    return dict(wall=time.perf_counter() - t0, rss_mb=usage.ru_maxrss / 1024, rc=rc)


def rates(metrics_path: Path) -> tuple[float, float]:
    """(steps/s of the whole loop, both compiles included; steps/s between the last two log entries)."""
    logs = [e for e in map(json.loads, metrics_path.read_text().splitlines()) if "steps_per_sec" in e]
    (s1, r1), (s2, r2) = [(e["step"], e["steps_per_sec"]) for e in logs[-2:]]
    return r2, (s2 - s1) / (s2 / r2 - s1 / r1)


def memory_at_scale(args, root: Path, datasets: list[dict]) -> list[str]:
    flags = {**TRAIN, **NET64, "train.steps": args.steps, "train.log_every": max(1, args.steps // 2),
             "train.checkpoint_every": args.steps}
    rows, peaks = [], {}
    for d, mode in itertools.product(datasets, ("streamed", "device")):
        if mode == "device" and 3 * d["n"] * 64 * 64 * 3 + 2**31 > mem_available():
            rows.append([d["n"], mode, "skipped: 3 × the pixels + 2 GiB > MemAvailable", "", "", "", "", ""])
            continue
        work = root / f"run_{d['n']}_{mode}"
        log(f"training {args.steps} steps, {d['n']} images, {mode}")
        r = run_child([sys.executable, "-m", "experiments.train", "--config=experiments/configs/folder_gan.py",
                       f"--config.data.name={d['name']}", f"--config.data.data_dir={root / 'data'}",
                       f"--config.data.pipeline={mode}", f"--workdir={work}",
                       *(f"--config.{k}={v}" for k, v in flags.items())], root / f"{work.name}.log")
        loop, steady = rates(work / "metrics.jsonl") if r["rc"] == 0 else (float("nan"),) * 2
        read = json.loads((work / "summary.json").read_text()).get("records_read", "all") if r["rc"] == 0 else ""
        peaks[d["n"], mode] = r["rss_mb"]
        rows.append([d["n"], mode, f"{r['rss_mb']:.0f}", f"{r['wall']:.0f}", f"{loop:.3f}", f"{steady:.3f}", read,
                     r["rc"]])
    big = datasets[-1]
    floor = run_child([sys.executable, "-c", "from gan_jax import trainer; from gan_jax.data import images; "
                       f"images.open_records({big['name']!r}, data_dir={str(root / 'data')!r})[0]"],
                      root / "floor.log")
    rows.append([big["n"], "imports + open records only", f"{floor['rss_mb']:.0f}", f"{floor['wall']:.0f}",
                 "", "", 1, floor["rc"]])
    small, large = (peaks.get((d["n"], "streamed"), np.nan) for d in (datasets[0], big))
    return ["## 1. Host memory at scale (64×64×3, one process per run)", "",
            f"Settings: experiments/configs/folder_gan.py (conv WGAN-GP, n_critic 5, λ = 10, generator batch "
            f"norm), {', '.join(f'{k}={v}' for k, v in flags.items())}; unlabelled (no evaluation classifier). "
            "Peak RSS: the training process's ru_maxrss (`os.wait4`).", "",
            *table(["images", "PNGs written (s)", "PNG bytes", "prepare (s)", "prepared, on disk", "uint8 pixels"],
                   [[d["n"], f"{d['made_s']:.0f}", f"{d['png_bytes'] / 1e6:.0f} MB", f"{d['prepare_s']:.0f}",
                     f"{d['bytes'] / 1e6:.0f} MB", f"{d['n'] * 64 * 64 * 3 / 1e6:.0f} MB"] for d in datasets]),
            *table(["images", "pipeline", "peak RSS (MB)", "wall (s)", "steps/s (loop, with compiles)",
                    "steps/s (second half)", "records read", "exit"], rows),
            *table(["target", "measured", "met"], [
                ["streamed peak RSS < 1.5 GB", f"{small:.0f} / {large:.0f} MB",
                 "yes" if max(small, large) < 1500 else "**no**"],
                [f"streamed peak RSS within 10 % from {datasets[0]['n']} to {big['n']} images",
                 f"{100 * (large / small - 1):+.1f} %", "yes" if abs(large / small - 1) <= 0.1 else "**no**"]])]


# --- 2 and 3: in-process, built as trainer._train builds a run ----------------------------------------------

class Run:
    """One config's source, engine, replicated state and compiled train step on the default mesh."""

    def __init__(self, cfg, mode: str):
        self.cfg = cfg = cfg.copy_and_resolve_references()
        cfg.data.pipeline = mode
        self.mesh = parallel.make_mesh(cfg.parallel.num_devices)
        self.source = make_source(cfg.data)
        self.engine = engine_lib.make_engine(cfg, self.source.shape)
        self.state = parallel.replicate(engine_lib.create_state(cfg, self.engine, self.source.shape), self.mesh)
        self.k, self.batch = cfg.train.steps_per_call, cfg.data.batch_size
        self.updates = cfg.loss.n_critic + cfg.loss.unroll_steps
        self.step = engine_lib.make_train_step(cfg, self.engine, self.source, self.mesh, steps_per_call=self.k)
        self.arrays = None if self.source.streamed else parallel.replicate(self.source.arrays, self.mesh)
        data = self.arrays if self.arrays is not None else self.place(next(iter(self.batches([(0, self.k)]))))
        t0 = time.perf_counter()
        for _ in range(2):  # the second call compiles again
            self.call(data)
        self.compile_s = time.perf_counter() - t0

    def batches(self, calls) -> pipeline.StreamedBatches:
        """The streamed host batches of `calls`, made as trainer._data_feed makes them."""
        key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(self.state.key).addressable_data(0)),
                                       impl=jax.random.key_impl(self.state.key))
        return pipeline.StreamedBatches(
            self.source.records, step_inputs.data_key(key), self.batch, self.updates, calls,
            rows=pipeline.process_rows(self.batch, self.mesh), num_threads=int(self.cfg.data.read_threads),
            prefetch_steps=int(self.cfg.data.prefetch) * self.k)

    def place(self, host) -> Batch:
        b = pipeline.to_global(host, self.mesh, self.batch)
        return Batch(b["image"], b.get("label"))

    def call(self, data) -> None:
        self.state, chunk = self.step(self.state, data)
        jax.device_get(chunk)  # as the trainer's loop: one host sync per fused call


def throughput(name: str, cfg, steps: int) -> list[list[str]]:
    """Part 2's rows for one config: supply and demand; waiting in a streamed loop; the read's pieces."""
    log(f"{name}: compiling the streamed step, then timing")
    run = Run(cfg, "streamed")
    calls, per_step = trainer.schedule(0, steps, run.k), run.batch * run.updates

    def supply(work) -> float:  # images/s of the host batches, each passed to `work`
        t0 = time.perf_counter()
        for h in run.batches(calls):
            work(h)
        return steps * per_step / (time.perf_counter() - t0)

    supply(lambda h: None)  # a first pass is slower (readers opening): not counted
    host, placed = supply(lambda h: None), supply(lambda h: jax.block_until_ready(run.place(h).x))
    ready = [run.place(h) for h in itertools.islice(run.batches(calls), 4)]
    t0 = time.perf_counter()
    for i in range(len(calls)):
        run.call(ready[i % len(ready)])
    alone = steps / (time.perf_counter() - t0)
    waits, feed = [], iter(run.batches(calls))  # per call: next() of the host batches, to_global, the step
    for _ in calls:
        t = [time.perf_counter()]
        h = next(feed)
        t.append(time.perf_counter())
        data = run.place(h)
        t.append(time.perf_counter())
        run.call(data)
        waits.append(np.diff(t + [time.perf_counter()]))
    w = np.asarray(waits)
    loop, share = steps / w.sum(), lambda a: f"{100 * a[:, :2].sum() / a.sum():.1f} %"
    return [[name, f"{run.batch} × {run.updates}", f"{run.compile_s:.0f}", f"{host:,.0f}", f"{placed:,.0f}",
             f"{alone * per_step:,.0f}", f"{host / (alone * per_step):.2f}×"],
            [name, f"{alone:.2f}", f"{loop:.2f}", f"{100 * (1 - loop / alone):.0f} %", share(w), share(w[1:]),
             f"{1e3 * w[0, 0]:.0f}", f"{1e3 * np.median(w[1:, 0]):.2f}", f"{1e3 * np.median(w[1:, 1]):.2f}"],
            [name, *read_pieces(run, calls, min(steps, 30))]]


def read_pieces(run: Run, calls, n: int) -> list[str]:
    """Median ms per step of the pieces of reading one step's U·B records, in this thread."""
    sb, times = run.batches(calls), []
    raw = getattr(getattr(sb.records, "data_source", None), "__getitems__", lambda ids: None)
    for o in range(n):
        t = [time.perf_counter()]
        ids = [int(i) for i in sb.step_indices(o).flat]
        t.append(time.perf_counter())
        raw(ids)  # the array_record bytes only (tfds sources)
        t.append(time.perf_counter())
        examples = sb.records.__getitems__(ids)  # the bytes + tfds's parse into numpy
        t.append(time.perf_counter())
        np.stack([np.asarray(e["image"]) for e in examples])
        t.append(time.perf_counter())
        host = sb.read_step(o)
        t.append(time.perf_counter())
        jax.block_until_ready(run.place({k: v[None] for k, v in host.items()}).x)
        times.append(np.diff(t + [time.perf_counter()]))
    med = np.median(np.asarray(times), axis=0) * 1e3
    us = lambda ms: f"{ms:.2f} ({1e3 * ms / len(ids):.0f} µs/record)"  # noqa: E731
    return [f"{med[0]:.2f}", us(med[1]), us(med[2] - med[1]), f"{med[3]:.2f}", f"{med[4]:.2f}", f"{med[5]:.2f}"]


def part2_lines(rows: list[list[list[str]]]) -> list[str]:
    return [
        "## 2. Streamed input throughput vs what the step consumes", "",
        "Images = batch × n_critic per step. Pipeline alone: StreamedBatches over the trainer's schedule with its "
        "settings (read_threads 8, prefetch 2 steps: grain reads 2 steps at a time), nothing else running. Step "
        "consumes: the train step fed from 4 placed batches.", "",
        *table(["config", "batch × n_critic", "compile (s, 2 calls)", "pipeline alone (img/s)",
                "pipeline + to_global (img/s)", "step consumes (img/s)", "supply / demand"], [r[0] for r in rows]),
        "The trainer's streamed loop, timed per call. Waiting: its time in next() + to_global (target < 5 %), "
        "without the first call (which starts grain's threads) too. Loop slower by: 1 − loop ÷ step alone, i.e. "
        "waiting plus the CPU the reading threads take from the step.", "",
        *table(["config", "step alone (steps/s)", "streamed loop (steps/s)", "loop slower by", "waiting (all)",
                "waiting (w/o first)", "first next() (ms)", "next() median (ms)", "to_global median (ms)"],
               [r[1] for r in rows]),
        "One step's U·B records read in one thread, median ms: indices, array_record bytes "
        "(`records.data_source.__getitems__`), tfds's parse into numpy (`records.__getitems__` − bytes), "
        "np.stack, the whole `read_step`, `to_global`.", "",
        *table(["config", "indices", "array_record read", "tfds parse", "np.stack", "read_step", "to_global"],
               [r[2] for r in rows])]


def versus(cfg, blocks: int, steps: int) -> list[str]:
    log("digits: compiling the device and the streamed step")
    runs = {"device": Run(cfg, "device"), "streamed": Run(cfg, "streamed")}
    k, got = runs["device"].k, {name: [] for name in runs}
    feed = iter(runs["streamed"].batches(trainer.schedule(0, blocks * steps, runs["device"].k)))
    log(f"digits: {blocks} alternating blocks of {steps} steps per pipeline")
    for i in range(blocks):
        for name in ("device", "streamed")[::1 if i % 2 == 0 else -1]:
            run = runs[name]
            time.sleep(0.05)
            t0 = time.perf_counter()
            for _ in range(steps // k):
                run.call(run.arrays if run.arrays is not None else run.place(next(feed)))
            got[name].append(steps // k * k / (time.perf_counter() - t0))
    feed.close()
    ratios = [s / d for s, d in zip(got["streamed"], got["device"])]
    fmt = lambda v: f"{statistics.median(v):.3g} [{min(v):.3g}–{max(v):.3g}]"  # noqa: E731
    return ["## 3. Digits: streamed vs device steps/s (same process, alternating blocks)", "",
            f"Full digits config; {blocks} blocks of {steps} steps per pipeline after compilation, order A B, "
            "B A, ...; median [min–max]. One streamed feed runs through all blocks.", "",
            *table(["device steps/s", "streamed steps/s", "streamed / device (per block)", "target", "met"],
                   [[fmt(got["device"]), fmt(got["streamed"]), fmt(ratios), "≥ 0.9×",
                     "yes" if statistics.median(ratios) >= 0.9 else "**no**"]])]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 / 5,000 images, 40 steps, short blocks")
    p.add_argument("--sizes", default="10000,50000", help="images per generated folder (part 1)")
    p.add_argument("--steps", type=int, default=200, help="generator steps of each training process (part 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--digits-steps", type=int, default=300, help="steps of the digits runs of part 2")
    p.add_argument("--net64-steps", type=int, default=40, help="steps of the 64×64 runs of part 2")
    p.add_argument("--blocks", type=int, default=7, help="alternating blocks per pipeline (part 3)")
    p.add_argument("--block-steps", type=int, default=150, help="steps per block (part 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (images, datasets, runs)")
    p.add_argument("--out", default=str(REPO / "results" / "input_pipeline.md"), help="markdown report path")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.steps, args.digits_steps, args.net64_steps = "1000,5000", 40, 100, 10
        args.blocks, args.block_steps = 3, 50
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    command = " ".join(["python benchmarks/input_pipeline.py", *(sys.argv[1:] if argv is None else argv)])
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    lines = ["# Input pipelines (benchmarks/input_pipeline.py)", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- machine: {cpu}, {os.cpu_count()} cores, {mem_available() / 2**30:.1f} GiB available",
             f"- jax {jax.__version__}, python {sys.version.split()[0]}",
             f"- load average (1, 5, 15 min) at start: {load()}", f"- command: `{command}`", ""]
    root = Path(tempfile.mkdtemp(prefix="gan_jax_input_pipeline_", dir="/tmp"))
    started = time.perf_counter()
    try:
        from experiments.configs import digits_wgan_gp, folder_gan

        datasets = make_datasets(root, [int(s) for s in args.sizes.split(",")], args.seed)
        lines += memory_at_scale(args, root, datasets)
        net64 = configure(folder_gan.get_config(), {**TRAIN, **NET64, "data.name": datasets[-1]["name"],
                                                    "data.data_dir": str(root / "data")})
        lines += part2_lines([throughput("digits (8×8×1)", digits_wgan_gp.get_config(), args.digits_steps),
                              throughput(f"64×64 net, {datasets[-1]['n']} images", net64, args.net64_steps)])
        lines += versus(digits_wgan_gp.get_config(), args.blocks, args.block_steps)
    finally:
        print(f"kept {root}" if args.keep else f"removing {root}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lines += ["## Notes", "",
              f"- total {(time.perf_counter() - started) / 60:.1f} min; load average at the end: {load()}.",
              "- Each train step compiles twice: the state `parallel.replicate` places has another sharding type "
              "than the one the donated step returns, so the second call misses jit's cache. 'steps/s (loop)' "
              "includes both compiles; 'second half' does not.", ""]
    text = "\n".join(lines)
    report.publish(text, args.out)


if __name__ == "__main__":
    main()
