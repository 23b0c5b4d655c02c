r"""Start a multi-process run on this machine: N copies of experiments.train, one per simulated host.

    python -m experiments.launch_local --processes=2 --devices_per_process=2 -- \
        --config=experiments/configs/ring8_wgan_gp.py:smoke --workdir=runs/two_hosts

Each process gets `--config.parallel.coordinator_address=127.0.0.1:PORT` (a free port),
`--config.parallel.num_processes=N` and its `--config.parallel.process_id`, and on CPU
`XLA_FLAGS=--xla_force_host_platform_device_count=D`: exactly what one process per host of a cluster gets.
Process 0's output is passed through; the others' lines are prefixed with `[process i]`. SIGTERM or SIGINT
to the launcher reaches every process (they save the same step and stop). If a process fails, the others
get `--grace_s` seconds to finish, then are killed; the exit code is the first failing process's, else 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "Number of processes (simulated hosts).", lower_bound=1)
_DEVICES = flags.DEFINE_integer(
    "devices_per_process", 2, "Simulated CPU devices per process (XLA_FLAGS); 0 = leave XLA_FLAGS alone.",
    lower_bound=0)
_GRACE = flags.DEFINE_float("grace_s", 10.0, "After one process fails, seconds before the others are killed.")

_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(devices: int, environ: dict[str, str]) -> dict[str, str]:
    """`environ` with XLA_FLAGS asking for `devices` CPU devices (other XLA flags kept)."""
    env = dict(environ)
    if devices:
        kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
        env["XLA_FLAGS"] = " ".join([*kept, f"{_DEVICE_FLAG}={devices}"])
    return env


def process_commands(train_args: list[str], processes: int, port: int) -> list[list[str]]:
    """One `python -m experiments.train` command line per process."""
    return [[sys.executable, "-m", "experiments.train", *train_args,
             f"--config.parallel.coordinator_address=127.0.0.1:{port}",
             f"--config.parallel.num_processes={processes}", f"--config.parallel.process_id={i}"]
            for i in range(processes)]


def _prefix_lines(stream, prefix: str) -> None:
    for line in stream:
        sys.stderr.write(f"{prefix}{line}")
    stream.close()


def launch(train_args: list[str], processes: int, devices: int, grace_s: float) -> int:
    """Runs the processes to the end; returns the first non-zero exit code, else 0."""
    env = process_env(devices, os.environ)
    procs = []
    for i, command in enumerate(process_commands(train_args, processes, free_port())):
        piped = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) if i else {}
        procs.append(subprocess.Popen(command, env=env, **piped))
        if i:
            threading.Thread(target=_prefix_lines, args=(procs[i].stdout, f"[process {i}] "), daemon=True).start()

    def forward(signum, frame):
        del frame
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    failed_at, code = None, 0
    while any(p.poll() is None for p in procs):
        if failed_at is None:
            failures = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failures:
                failed_at, code = time.monotonic(), failures[0]
        elif time.monotonic() - failed_at > grace_s:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    return code or next((p.returncode for p in procs if p.returncode), 0)


def main(argv: list[str]) -> None:
    """Exits with `launch`'s code for the experiments.train arguments after `--` in `argv`."""
    train_args = argv[1:]
    if not train_args:
        raise app.UsageError("give the experiments.train arguments after `--`, e.g. "
                             "-- --config=experiments/configs/ring8_wgan_gp.py:smoke --workdir=runs/two_hosts")
    sys.exit(launch(train_args, _PROCESSES.value, _DEVICES.value, _GRACE.value))


if __name__ == "__main__":
    app.run(main)
