"""gan_jax.workdir: the run folder's marker and its one-writer lock, with real files and real second processes."""

import errno
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from etils import epath

from gan_jax import __version__, disk_full, run_records, workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A second process that takes the lock, says so, and holds it until its stdin closes.
_HOLDER = """
import sys
from gan_jax import workdir
lock = workdir.acquire(sys.argv[1], is_writer=True)
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


def _tree(directory):
    """{relative path: sha256 of content, or 'dir'} of everything under `directory` (itself included)."""
    out = {".": "dir"}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _start_holder(path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def test_missing_folder_is_created_with_a_marker(tmp_path):
    path = workdir.prepare(str(tmp_path / "a" / "run"), is_writer=True)
    assert path == str(tmp_path / "a" / "run")
    with open(os.path.join(path, workdir.MARKER)) as f:
        marker = json.load(f)
    assert marker["created_by"] == "gan_jax" and marker["version"] == __version__ and marker["created"]
    assert sorted(os.listdir(path)) == [workdir.MARKER]


def test_empty_folder_gets_a_marker_and_a_marked_one_is_accepted_unchanged(tmp_path):
    workdir.prepare(str(tmp_path), is_writer=True)
    assert os.listdir(tmp_path) == [workdir.MARKER]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    before = _tree(tmp_path)
    assert workdir.prepare(str(tmp_path), is_writer=True) == str(tmp_path)
    assert _tree(tmp_path) == before


def test_foreign_non_empty_folder_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "data").mkdir()
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match=rf"{tmp_path} is not empty and was not created by gan_jax"
                                                   r".*thesis\.tex.*nothing was written"):
        workdir.prepare(str(tmp_path), is_writer=True)
    assert _tree(tmp_path) == before
    workdir.mark(str(tmp_path))  # the explicit adoption the message offers
    workdir.prepare(str(tmp_path), is_writer=True)


def test_non_writer_writes_nothing(tmp_path):
    path = tmp_path / "run"
    assert workdir.prepare(str(path), is_writer=False) == str(path)
    lock = workdir.acquire(str(tmp_path), is_writer=False)
    assert not lock.held
    lock.release()
    assert not path.exists() and os.listdir(tmp_path) == []


def test_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match=r"run is a file, not a folder"):
        workdir.prepare(str(tmp_path / "run"), is_writer=True)
    with pytest.raises(workdir.WorkdirError, match=r"run is a file, not a folder"):
        workdir.prepare(str(tmp_path / "run" / "deeper" / "run2"), is_writer=True)
    assert _tree(tmp_path) == before


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "parent").write_text("x")
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match=rf"cannot be created: {tmp_path}/parent is a file"):
        workdir.prepare(str(tmp_path / "parent" / "run"), is_writer=True)
    assert _tree(tmp_path) == before


def test_checkpoints_that_is_a_file_is_refused(tmp_path):
    workdir.prepare(str(tmp_path), is_writer=True)
    (tmp_path / "checkpoints").write_text("x")
    before = _tree(tmp_path)
    with pytest.raises(workdir.WorkdirError, match=r"checkpoints is a file, not a folder"):
        workdir.prepare(str(tmp_path), is_writer=True)
    assert _tree(tmp_path) == before


def _prepare_read_only(ro_dir, target):
    """(exit code, output) of workdir.prepare(target) in a subprocess that cannot write to `ro_dir`.

    As root (permissions do not bind root) `ro_dir` is made a read-only bind mount inside a private mount
    namespace of the subprocess (nothing outside it sees the mount); otherwise it is chmod 555 meanwhile.
    """
    code = ("import sys\nfrom gan_jax import workdir\ntry:\n    workdir.prepare(sys.argv[1], is_writer=True)\n"
            "except workdir.WorkdirError as e:\n    print(e)\n    sys.exit(3)\n")
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare(1): no way to make a folder read-only")
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97; exec "$2" -c "$3" "$4"'
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", ro_dir,
                               sys.executable, code, target], cwd=REPO, capture_output=True, text=True)
        if proc.returncode == 97:
            pytest.skip(f"running as root and cannot make a read-only bind mount: {proc.stderr.strip()}")
    else:
        os.chmod(ro_dir, 0o555)
        try:
            proc = subprocess.run([sys.executable, "-c", code, target], cwd=REPO, capture_output=True, text=True)
        finally:
            os.chmod(ro_dir, 0o755)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", ["empty", "marked", "missing_child"])
def test_read_only_folder_is_refused_in_one_line(tmp_path, case):
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    if case == "marked":
        workdir.prepare(ro, is_writer=True)
    before = _tree(ro)
    target = os.path.join(ro, "run") if case == "missing_child" else ro
    rc, out = _prepare_read_only(ro, target)
    assert rc == 3, out
    assert out.count("\n") == 1 and target in out
    assert ("cannot be created (" in out) if case == "missing_child" else ("is not writable" in out)
    assert _tree(ro) == before


def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    workdir.prepare(str(tmp_path), is_writer=True)
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(workdir.WorkdirLockedError,
                           match=rf"in use by another gan_jax run: pid {holder.pid} on host "
                                 rf"{socket.gethostname()}, running since .*Wait for that run"):
            workdir.acquire(str(tmp_path), is_writer=True)
        # a third, separate process is refused too
        third = subprocess.run([sys.executable, "-c", _HOLDER, str(tmp_path)], cwd=REPO, capture_output=True,
                               text=True, stdin=subprocess.DEVNULL)
        assert third.returncode != 0 and "WorkdirLockedError" in third.stderr and str(holder.pid) in third.stderr
    finally:
        holder.stdin.close()
        assert holder.wait() == 0
    with workdir.acquire(str(tmp_path), is_writer=True) as lock:  # released by the holder: free again
        assert lock.held and workdir.read_holder(str(tmp_path))["pid"] == os.getpid()
    assert workdir.read_holder(str(tmp_path)) is None  # cleared on release


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    workdir.prepare(str(tmp_path), is_writer=True)
    holder = _start_holder(tmp_path)
    assert workdir.read_holder(str(tmp_path))["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL
    lock = workdir.acquire(str(tmp_path), is_writer=True)
    try:
        assert lock.held
        assert workdir.read_holder(str(tmp_path))["pid"] == os.getpid()
        with pytest.raises(workdir.WorkdirLockedError, match=rf"pid {os.getpid()}"):
            workdir.acquire(str(tmp_path), is_writer=True)  # a second open file in this process is refused too
    finally:
        lock.release()
    lock.release()  # idempotent


def test_lock_does_not_leak_into_child_processes(tmp_path):
    workdir.prepare(str(tmp_path), is_writer=True)
    lock = workdir.acquire(str(tmp_path), is_writer=True)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock.release()
        workdir.acquire(str(tmp_path), is_writer=True).release()  # the running child does not keep it
    finally:
        child.stdin.close()
        child.wait()


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_an_empty_or_blank_path_is_refused_before_anything_is_written(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)  # what an empty path would mean
    for call in (workdir.resolve, workdir.prepare, workdir.acquire, workdir.mark):
        with pytest.raises(workdir.WorkdirError, match=rf"--workdir={re.escape(repr(value))} is empty"):
            call(value) if call is workdir.resolve else call(value, **({} if call is workdir.mark else
                                                                        {"is_writer": True}))
    assert os.listdir(tmp_path) == []


def test_saved_steps_are_the_committed_step_folders_newest_first(tmp_path):
    assert workdir.saved_steps(str(tmp_path)) == []  # no checkpoints folder
    checkpoints = tmp_path / workdir.CHECKPOINTS
    for name in ("10", "200", "30.orbax-checkpoint-tmp", "5.corrupt", "best"):
        (checkpoints / name).mkdir(parents=True)
    (checkpoints / "40").write_text("a file, not a step")
    assert workdir.saved_steps(str(tmp_path)) == [200, 10]


@pytest.mark.parametrize("kind", [str, pathlib.Path, epath.Path], ids=["str", "pathlib", "epath"])
def test_a_local_workdir_given_as_str_pathlib_or_epath_works_alike(tmp_path, kind):
    run = tmp_path / "run"
    path = workdir.prepare(kind(run), is_writer=True)
    assert path == str(run) and (run / workdir.MARKER).is_file()
    assert workdir.prepare(kind(run), is_writer=True) == str(run)  # found marked: accepted
    with workdir.acquire(kind(run), is_writer=True) as lock:
        assert lock.held and lock.workdir == str(run)
        assert workdir.read_holder(kind(run))["pid"] == os.getpid()
        with pytest.raises(workdir.WorkdirLockedError, match=rf"pid {os.getpid()}"):
            workdir.acquire(kind(run), is_writer=True)
    assert workdir.read_holder(kind(run)) is None
    for step in ("3", "12", "7.orbax-checkpoint-tmp"):
        (run / workdir.CHECKPOINTS / step).mkdir(parents=True)
    assert workdir.saved_steps(kind(run)) == [12, 3]


def test_as_path_keeps_a_url_and_makes_a_local_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("gs://bucket/x", epath.Path("gs://bucket/x")):
        assert os.fspath(workdir.as_path(url)) == "gs://bucket/x" and workdir.url_scheme(url) == "gs"
    assert workdir.resolve("gs://bucket/runs/ring8") == "gs://bucket/runs/ring8"
    for relative in ("runs/ring8", pathlib.Path("runs/ring8"), "./runs/../runs/ring8"):
        assert workdir.as_path(relative) == epath.Path(tmp_path / "runs" / "ring8")
        assert workdir.url_scheme(relative) is None
    # "://" after the first path component is part of a local name, not a URL scheme
    assert workdir.url_scheme("runs/a://b") is None
    assert os.fspath(workdir.as_path("runs/a://b")) == f"{tmp_path}/runs/a:/b"


def test_a_url_workdir_is_not_locked_and_says_so_in_one_line(capsys):
    """Object storage has no flock: the decision is taken from the URL alone (nothing is read or written there)."""
    assert workdir._lock("gs://bucket/run") is None
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and warning.startswith(
        "gan_jax: warning: --workdir gs://bucket/run is object storage: one writer per workdir is not enforced")
    lock = workdir.acquire("gs://bucket/run", is_writer=True)
    assert not lock.held and lock.workdir == "gs://bucket/run" and lock.path == "gs://bucket/run/.gan_jax.lock"
    lock.release()  # nothing to release
    assert not lock.held and capsys.readouterr().err == warning
    workdir.acquire("gs://bucket/run", is_writer=False).release()
    assert capsys.readouterr().err == ""  # only the writer says it


def test_atomic_write_replaces_whole_or_leaves_the_file_as_it_was(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with workdir.atomic_write(target) as f:
            f.write("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
    with workdir.atomic_write(epath.Path(target), "wb") as f:
        f.write(b"new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["config.json"]


def test_metrics_log_on_a_local_epath_workdir_appends_and_drops_entries_past_the_resumed_step(tmp_path):
    log = run_records.MetricsLog(epath.Path(tmp_path), resume_step=0)
    for step in (1, 2, 3):
        log.write(step, {"loss": float(step)})
    log.close()
    log = run_records.MetricsLog(str(tmp_path), resume_step=2)
    log.write(4, {"loss": 4.0})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 4]
    assert any(name.startswith("events.") for name in os.listdir(tmp_path / "tb"))


def test_tensorboard_events_are_skipped_with_a_warning_for_a_url_tensorboardx_cannot_write(capsys):
    from tensorboardX.record_writer import REGISTERED_FACTORIES

    assert {"gs", "s3"} <= set(REGISTERED_FACTORIES)  # the URLs BUILD.md says tensorboardX writes itself
    assert run_records._tensorboard(epath.Path("az://container/run/tb"), resume_step=0) is None
    assert capsys.readouterr().err == ("gan_jax: warning: no TensorBoard events in az://container/run/tb "
                                       "(tensorboardX writes no az:// URLs); metrics.jsonl has every entry\n")


def _tensorstore_error(path):
    """The text tensorstore's writer raises on a full disk (as seen with orbax-checkpoint 0.12.8)."""
    return ValueError(f'RESOURCE_EXHAUSTED: Error writing "critic_params.output.bias/0" in OCDBT database at local '
                      f'file "{path}/": Failed writing: "{path}/d/8de6": Failed to write 28096 bytes to file 12: '
                      "No space left on device [os_error_code='28']")


@pytest.mark.parametrize("make_error", [
    lambda path: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)),
    _tensorstore_error,
    lambda path: RuntimeError("save thread failed"),  # with the full disk as its cause, below
], ids=["oserror", "tensorstore_text", "caused_by"])
def test_a_full_disk_becomes_one_error_naming_the_safe_step_and_its_size(tmp_path, make_error):
    step10 = tmp_path / workdir.CHECKPOINTS / "10"
    step10.mkdir(parents=True)
    (step10 / "arrays").write_bytes(os.urandom(300 * 1024))
    error = make_error(tmp_path)
    with pytest.raises(disk_full.DiskFullError) as caught:
        with disk_full.disk_full_as_error(str(tmp_path), state_bytes=1000):
            if isinstance(error, RuntimeError):
                raise error from OSError(errno.ENOSPC, "No space left on device")
            raise error
    du_kib = int(subprocess.run(["du", "-sk", str(step10)], capture_output=True, text=True).stdout.split()[0])
    message = str(caught.value)
    assert message.startswith(f"the disk of --workdir {tmp_path} is full (No space left on device): checkpoint "
                              f"step 10 in {tmp_path}/checkpoints is complete and safe")
    assert f"a checkpoint takes about {du_kib:.1f} KiB there" in message and "are free" in message
    assert caught.value.__cause__ is error


def test_other_errors_pass_through_and_no_step_is_said_plainly(tmp_path):
    for error in (ValueError("RESOURCE_EXHAUSTED: out of memory"), workdir.WorkdirError("No space left on device")):
        with pytest.raises(type(error)) as caught:
            with disk_full.disk_full_as_error(str(tmp_path), state_bytes=1000):
                raise error
        assert caught.value is error
    with pytest.raises(disk_full.DiskFullError, match=r"no checkpoint was completed .* the state's 1000 bytes of "
                                                    r"arrays"):
        with disk_full.disk_full_as_error(str(tmp_path), state_bytes=1000):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))


def test_log_records_about_a_full_disk_are_dropped_inside_only(tmp_path, caplog):
    from absl import logging as absl_logging

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with caplog.at_level("ERROR"):
        with disk_full.disk_full_as_error(str(tmp_path), state_bytes=0):
            absl_logging.error("save thread failed", exc_info=(OSError, full, None))
            absl_logging.error("commit failed: %s", _tensorstore_error(tmp_path))
            absl_logging.error("another failure")
        absl_logging.error("save thread failed", exc_info=(OSError, full, None))
    assert [r.getMessage() for r in caplog.records] == ["another failure", "save thread failed"]
