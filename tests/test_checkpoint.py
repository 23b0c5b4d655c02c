"""Checkpoint tests: exact resume through the real training loop; digests, all-corrupt steps, the workdir lock,
read-only restore beside a live writer process, and two jax.distributed processes."""

import hashlib
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gan_jax import trainer
from experiments.configs import common
from gan_jax import checkpoint as ckpt
from gan_jax import checkpoint_digests
from gan_jax import config as config_lib
from gan_jax import workdir as workdir_lib
from gan_jax.checkpoint import IncompatibleCheckpointError
from gan_jax.engine import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps):
    cfg = common.toy("ring8", "wgan_gp", "smoke")
    cfg.data.batch_size = 32
    cfg.model.width = 16
    cfg.model.depth = 2
    cfg.loss.n_critic = 2
    cfg.train.steps = steps
    cfg.train.sample_every = 0
    cfg.train.eval_samples = 64
    return cfg


def _leaves(state):
    to_numpy = lambda x: np.asarray(
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    return [to_numpy(leaf) for leaf in jax.tree.leaves(state)]


def _metric_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in rows]


def _snapshot(directory):
    return sorted((os.path.relpath(os.path.join(root, name), directory), os.path.getmtime(os.path.join(root, name)))
                  for root, _, files in os.walk(directory) for name in files)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """20 steps in one go: the reference trajectory."""
    workdir = str(tmp_path_factory.mktemp("full"))
    trainer.train_and_evaluate(_config(20), workdir, progress=False)
    return workdir


def test_stop_and_resume_is_bitwise_identical(uninterrupted, tmp_path):
    workdir = str(tmp_path)
    trainer.train_and_evaluate(_config(10), workdir, progress=False)
    summary = trainer.train_and_evaluate(_config(20), workdir, progress=False)
    assert summary["step"] == 20
    for a, b in zip(_leaves(trainer.restore_state(uninterrupted)), _leaves(trainer.restore_state(workdir))):
        np.testing.assert_array_equal(a, b)
    assert _metric_lines(workdir) == _metric_lines(uninterrupted)


def test_corrupt_newest_checkpoint_is_skipped_and_kept(uninterrupted, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(_config(10), workdir, progress=False)  # checkpoints at 10 (every 10)
    cfg = _config(20)
    cfg.train.checkpoint_every = 5
    trainer.train_and_evaluate(cfg, workdir, progress=False)  # + 15, 20
    newest = os.path.join(workdir, "checkpoints", "20")
    for root, _, files in os.walk(os.path.join(newest, "state")):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(f.name) // 3))
    state = trainer.restore_state(workdir)  # read-only: skips step 20, renames nothing
    assert int(state.step) == 15
    assert os.path.isdir(newest) and not os.path.exists(newest + ".corrupt")
    assert "checkpoint step 20 in" in caplog.text and "skipped" in caplog.text
    # The training run keeps the step aside; resuming from 15 reproduces the uninterrupted run's step 20 exactly.
    trainer.train_and_evaluate(cfg, workdir, progress=False)
    assert os.path.isdir(newest + ".corrupt"), "the corrupt step is kept aside, not deleted"
    assert "checkpoint step 20 could not be restored" in caplog.text
    for a, b in zip(_leaves(trainer.restore_state(uninterrupted)), _leaves(trainer.restore_state(workdir))):
        np.testing.assert_array_equal(a, b)


def test_changed_model_width_is_refused_and_nothing_is_overwritten(uninterrupted):
    before = _snapshot(uninterrupted)
    cfg = _config(30)
    cfg.model.width = 24
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width: 16 -> 24"):
        trainer.train_and_evaluate(cfg, uninterrupted, progress=False)
    assert _snapshot(uninterrupted) == before


def test_nonfinite_step_stops_with_the_last_good_checkpoint(tmp_path):
    cfg = _config(20)
    cfg.optim.critic.learning_rate = 1e30  # the critic explodes within a few steps
    cfg.optim.critic.name = "sgd"
    cfg.loss.penalty = "none"
    cfg.loss.penalty_weight = 0.0
    with pytest.raises(trainer.NonFiniteLossError, match=r"non-finite loss or parameters at step \d+.*Last good"):
        trainer.train_and_evaluate(cfg, str(tmp_path), progress=False)
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()], "no NaN state was saved"


# ------------------------------------------------------------------------------------------------------------
# The Checkpointer and restore_readonly on small hand-made states (no training): digests, all-corrupt steps,
# the lock's tmp-folder cleanup, and a reader beside a real writer process.



def _state(step, n=4096):
    """A TrainState whose `critic_state['u']` is random uint32 bits: stored verbatim (incompressible)."""
    rng = np.random.default_rng(step)
    return TrainState(
        step=jnp.int32(step),
        generator_params={"w": jnp.asarray(rng.standard_normal(n).astype(np.float32))},
        critic_params={"v": jnp.full((3, 3), float(step))},
        critic_state={"u": jnp.asarray(rng.integers(0, 2**32, n, dtype=np.uint32))}, generator_state={},
        generator_opt_state=(), critic_opt_state=(), key=jax.random.key(step))


def _small_config():
    cfg = config_lib.base_config()
    cfg.train.max_to_keep = 5
    return cfg


def _save(workdir, steps, cfg=None):
    saver = ckpt.Checkpointer(str(workdir), cfg or _small_config())
    for step in steps:
        saver.save(_state(step))
    saver.close()


def _flip_a_byte_of_u(workdir, step, at=8000):
    """Flips one bit inside the stored bytes of `critic_state['u']` of `step`, in element (at + 10) // 4 (orbax
    restores it silently)."""
    pattern = np.asarray(_state(step).critic_state["u"]).tobytes()[at:at + 64]
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "state")):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = bytearray(f.read())
            at = data.find(pattern)
            if at >= 0:
                data[at + 10] ^= 0x01
                with open(path, "wb") as f:
                    f.write(data)
                return
    raise AssertionError("the array's bytes were not found in the checkpoint")


def _tree(directory):
    """{relative path: sha256 / 'dir'} of everything under `directory`."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory)] = "dir"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _assert_same(a, b):
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_digests_cover_every_leaf_and_key_data():
    record = checkpoint_digests.state_digests(_state(3))
    assert record["algorithm"] == "sha256"
    assert set(record["arrays"]) == {".step", ".generator_params['w']", ".critic_params['v']",
                                     ".critic_state['u']", ".key"}
    assert record["arrays"][".key"]["dtype"] == "uint32" and record["arrays"][".key"]["shape"] == [2]
    assert checkpoint_digests.state_digests(_state(3)) == record
    assert checkpoint_digests.state_digests(_state(4))["arrays"][".key"] != record["arrays"][".key"]


def test_flipped_byte_is_caught_by_its_digest_and_the_step_kept_aside(tmp_path, caplog):
    _save(tmp_path, [10, 20])
    _flip_a_byte_of_u(str(tmp_path), 20)
    # orbax alone restores the flipped step without complaint, with one value changed:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state(0))
    with ocp.CheckpointManager(str(tmp_path / "checkpoints")) as manager:
        raw = manager.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
    assert np.sum(np.asarray(raw.critic_state["u"]) != np.asarray(_state(20).critic_state["u"])) == 1
    # the Checkpointer sees the mismatch, names the array, keeps the step aside and uses the previous one:
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    assert int(restored.step) == 10
    _assert_same(restored, _state(10))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20.corrupt"]
    assert ("checkpoint step 20 could not be restored (CorruptCheckpointError: array .critic_state['u'] does not "
            "match its saved sha256 digest)") in caplog.text


def test_all_steps_corrupt_raises_instead_of_starting_fresh(tmp_path):
    assert ckpt.Checkpointer(str(tmp_path / "empty"), _small_config()).restore_latest(_state(0)) is None
    _save(tmp_path, [10, 20])
    _flip_a_byte_of_u(str(tmp_path), 10)
    _flip_a_byte_of_u(str(tmp_path), 20)
    with pytest.raises(ckpt.AllCheckpointsCorruptError,
                       match=r"none of the 2 checkpoint step\(s\) in .*checkpoints \(20, 10\) could be restored; "
                             r"all were kept aside as <step>\.corrupt.*new --workdir"):
        ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10.corrupt", "20.corrupt"]
    # Running again must not silently start fresh over the kept-aside steps either.
    with pytest.raises(ckpt.AllCheckpointsCorruptError, match=r"only 2 step\(s\) kept aside as corrupt"):
        ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    assert isinstance(ckpt.AllCheckpointsCorruptError("x"), ValueError)


def test_a_saved_non_finite_state_is_refused_and_kept_aside(tmp_path, caplog):
    """Its digests match (they were taken of the NaN), but a NaN parameter is not a state to resume from."""
    bad = _state(20)
    bad = bad.replace(generator_params={"w": bad.generator_params["w"].at[5].set(jnp.nan)})
    saver = ckpt.Checkpointer(str(tmp_path), _small_config())
    saver.save(_state(10))  # finite: its integer step, uint32 state and PRNG key are not judged
    saver.save(bad)
    saver.close()
    with caplog.at_level(logging.WARNING):
        step, restored = ckpt.restore_readonly(str(tmp_path), _state(0))  # skips it, renames nothing
    assert step == 10 and sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    assert "checkpoint step 20 in" in caplog.text and "restored parameters are not finite" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    _assert_same(restored, _state(10))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20.corrupt"]
    assert "checkpoint step 20 could not be restored (CorruptCheckpointError: restored parameters are not finite)" \
        in caplog.text


def test_step_saved_without_digests_restores_with_a_warning(tmp_path, caplog):
    """A step written the way gan_jax did before digests (state + config only) is restored, unverified."""
    cfg = _small_config()
    with ocp.CheckpointManager(str(tmp_path / "checkpoints"), options=ocp.CheckpointManagerOptions(create=True)) as m:
        m.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(7)),
                                          config=ocp.args.JsonSave(cfg.to_dict())))
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), cfg).restore_latest(_state(0))
    _assert_same(restored, _state(7))
    assert "checkpoint step 7" in caplog.text and "has no array digests" in caplog.text


def test_a_step_saved_before_generator_state_existed_is_migrated_and_left_untouched(tmp_path):
    """A TrainState of the previous gan_jax (no generator_state field), saved with its digests, restores into
    today's TrainState with generator_state = {}; the files are not changed."""
    import flax

    @flax.struct.dataclass
    class PreviousTrainState:  # TrainState's fields before generator_state was added
        step: jax.Array
        generator_params: dict
        critic_params: dict
        critic_state: dict
        generator_opt_state: tuple
        critic_opt_state: tuple
        key: jax.Array
        generator_ema_params: dict = None

    new = _state(7)
    old = PreviousTrainState(**{f: getattr(new, f) for f in PreviousTrainState.__dataclass_fields__})
    saver = ckpt.Checkpointer(str(tmp_path), _small_config())
    saver.save(old)
    saver.close()
    before = _tree(tmp_path)
    restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    assert isinstance(restored, TrainState) and restored.generator_state == {}
    _assert_same(restored, new)
    assert ckpt.restore_readonly(str(tmp_path), _state(0))[1].generator_state == {}
    assert _tree(tmp_path) == before
    # Saved configs that predate a field read as its default: no structural difference.
    saved = _small_config().to_dict()
    del saved["model"]["num_classes"], saved["model"]["generator_batch_norm"]
    assert config_lib.structural_differences(saved, json.loads(_small_config().to_json())) == []


def test_differently_shaped_state_is_incompatible_and_nothing_changes(tmp_path):
    _save(tmp_path, [10])
    before = _tree(tmp_path)
    with pytest.raises(ckpt.IncompatibleCheckpointError,
                       match=r"\.critic_state\['u'\]: uint32\[4096\] saved, uint32\[100\] now.*Nothing was changed"):
        ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0, n=100))
    with pytest.raises(ckpt.IncompatibleCheckpointError, match=r"\.critic_state\['u'\]"):
        ckpt.restore_readonly(str(tmp_path), _state(0, n=100))
    assert _tree(tmp_path) == before


def test_leftover_tmp_folders_are_removed_only_under_the_workdir_lock(tmp_path):
    path = workdir_lib.prepare(str(tmp_path / "run"), is_writer=True)
    _save(path, [10])
    leftover = os.path.join(path, "checkpoints", "20.orbax-checkpoint-tmp")
    os.makedirs(os.path.join(leftover, "state"))
    ckpt.Checkpointer(path, _small_config()).close()
    assert os.path.isdir(leftover), "without the lock another process may be writing it: kept"
    with pytest.raises(ValueError, match="the lock given is for"):
        ckpt.Checkpointer(path, _small_config(), lock=workdir_lib.WorkdirLock(str(tmp_path), None))
    with workdir_lib.acquire(path, is_writer=True) as lock:
        saver = ckpt.Checkpointer(path, _small_config(), lock=lock)
        assert not os.path.exists(leftover)
        _assert_same(saver.restore_latest(_state(0)), _state(10))
        saver.close()


def test_readonly_restore_writes_nothing_and_skips_bad_steps_in_memory(tmp_path, caplog):
    _save(tmp_path, [10, 20, 30])
    _flip_a_byte_of_u(str(tmp_path), 30)
    checkpoints = tmp_path / "checkpoints"
    os.makedirs(checkpoints / "40.orbax-checkpoint-tmp" / "state")  # a save in progress elsewhere
    (checkpoints / "40.orbax-checkpoint-tmp" / "state" / "partial").write_bytes(b"\0" * 100)
    os.makedirs(checkpoints / "5.corrupt")
    before = _tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.restore_readonly(str(tmp_path), _state(0), _small_config())
    assert step == 20
    _assert_same(state, _state(20))
    assert "checkpoint step 30" in caplog.text and "critic_state['u'] does not match" in caplog.text
    step, _ = ckpt.restore_readonly(str(checkpoints), jax.tree.map(ocp.utils.to_shape_dtype_struct, _state(0)))
    assert step == 20  # the checkpoints folder itself, and ShapeDtypeStructs, work too
    assert _tree(tmp_path) == before, "a read-only restore must not create, change, rename or delete anything"


def test_readonly_restore_errors(tmp_path):
    with pytest.raises(ckpt.NoValidCheckpointError, match="no checkpoints at"):
        ckpt.restore_readonly(str(tmp_path / "missing"), _state(0))
    os.makedirs(tmp_path / "checkpoints" / "10.orbax-checkpoint-tmp")
    with pytest.raises(ckpt.NoValidCheckpointError, match="no committed checkpoint"):
        ckpt.restore_readonly(str(tmp_path), _state(0))
    _save(tmp_path, [20])
    cfg = _small_config()
    cfg.model.width = 7
    with pytest.raises(ckpt.IncompatibleCheckpointError, match=r"model\.width: 512 -> 7"):
        ckpt.restore_readonly(str(tmp_path), _state(0), cfg)
    _flip_a_byte_of_u(str(tmp_path), 20)
    before = _tree(tmp_path)
    with pytest.raises(ckpt.NoValidCheckpointError, match=r"none of the 1 committed checkpoint step\(s\).*20 \("):
        ckpt.restore_readonly(str(tmp_path), _state(0))
    assert _tree(tmp_path) == before


# A training-like writer: holds the workdir lock and saves a new step whenever asked, until told to stop;
# every save is started asynchronously, as in training.
_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
import jax
from gan_jax import checkpoint, workdir
HELPERS
path = workdir.prepare(sys.argv[1], is_writer=True)
lock = workdir.acquire(path, is_writer=True)
cfg = _small_config()
cfg.train.max_to_keep = 1000
saver = checkpoint.Checkpointer(path, cfg, lock=lock)
step = 0
for line in sys.stdin:
    if line.strip() == "stop":
        break
    step += 1
    saver.save(_state(step, n=1 << 16))
    print(step, flush=True)
saver.close()
lock.release()
print("done", step, flush=True)
"""


def _script(body):
    """`body` with HELPERS replaced by this module's state helpers (a subprocess need not import the tests)."""
    import inspect

    helpers = "\n".join(inspect.getsource(f) for f in (_state, _small_config, _flip_a_byte_of_u))
    imports = ("import os\nimport numpy as np\nimport jax.numpy as jnp\nimport jax\n"
               "from gan_jax import config as config_lib\nfrom gan_jax.engine import TrainState\n")
    return body.replace("HELPERS", imports + helpers)


def test_readonly_reader_beside_a_live_writer_process(tmp_path):
    """Reads while a real second process saves: the writer's saves all commit, every read is a valid step."""
    writer = subprocess.Popen([sys.executable, "-c", _script(_WRITER), str(tmp_path), REPO], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    like = _state(0, n=1 << 16)
    seen, reads = [], 0
    try:
        for _ in range(25):
            writer.stdin.write("save\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip(), writer.stderr.read()  # the save has started
            for _ in range(2):  # read while that save is (most likely) still being written
                try:
                    step, state = ckpt.restore_readonly(str(tmp_path), like)
                except ckpt.NoValidCheckpointError:
                    assert not seen, "once a step was committed there is always one to read"
                    continue
                reads += 1
                np.testing.assert_array_equal(np.asarray(state.critic_state["u"]),
                                              np.asarray(_state(step, n=1 << 16).critic_state["u"]))
                assert not seen or step >= seen[-1]
                seen.append(step)
        writer.stdin.write("stop\n")
        writer.stdin.flush()
        out, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert out.strip().splitlines()[-1] == "done 25"
    assert reads >= 20 and seen[-1] >= 20
    names = os.listdir(tmp_path / "checkpoints")
    assert sorted(int(n) for n in names) == list(range(1, 26)), names  # every save committed: no tmp lost
    assert ckpt.restore_readonly(str(tmp_path), like)[0] == 25


# Two processes with jax.distributed (gloo): prepare/acquire agree, the Checkpointer saves and verifies global
# arrays (critic_state['u'] split over the 4 devices of both processes, the rest replicated), each process
# checking the shards it holds; a corrupt step (a flipped bit in a shard of process 1, then of process 0) is
# kept aside by both (renamed once, by process 0), and all-corrupt raises on both.
_TWO_PROCESSES = r"""
import json, os, sys
sys.path.insert(0, sys.argv[4])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from gan_jax import checkpoint, workdir
HELPERS

root = sys.argv[3]
out = {"process": jax.process_index()}
mesh = Mesh(np.array(jax.devices()), ("data",))
def global_state(step):
    def one(path, leaf):
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(leaf) if is_key else leaf)
        spec = P("data") if jax.tree_util.keystr(path) == ".critic_state['u']" else P()
        arr = jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda idx: host[idx])
        return jax.random.wrap_key_data(arr) if is_key else arr
    return jax.tree_util.tree_map_with_path(one, _state(step))

os.makedirs(os.path.join(root, "foreign"), exist_ok=True)
if jax.process_index() == 0:
    open(os.path.join(root, "foreign", "notes.txt"), "w").write("x")
multihost_utils.sync_global_devices("foreign ready")
try:
    workdir.prepare(os.path.join(root, "foreign"))
except workdir.WorkdirError as e:
    out["foreign"] = str(e)
path = workdir.prepare(os.path.join(root, "run"))
lock = workdir.acquire(path)
out["held"] = lock.held
saver = checkpoint.Checkpointer(path, _small_config(), lock=lock)
for step in (10, 20):
    saver.save(global_state(step))
saver.wait()
out["digest_files"] = sorted(os.listdir(os.path.join(path, "checkpoints", "20", "digests")))
multihost_utils.sync_global_devices("listed digests")
if jax.process_index() == 0:
    _flip_a_byte_of_u(path, 20, at=14000)  # element 3502: in the shard [3072:4096], on process 1's last device
multihost_utils.sync_global_devices("flipped 20")
restored = saver.restore_latest(global_state(0))
out["restored"] = int(np.asarray(restored.step.addressable_data(0)))
u = restored.critic_state["u"]
out["u_spec"] = str(u.sharding.spec)
out["u_ok"] = all(np.array_equal(np.asarray(s.data), np.asarray(_state(10).critic_state["u"])[s.index])
                  for s in u.addressable_shards)
multihost_utils.sync_global_devices("listed")
out["listing"] = sorted(os.listdir(os.path.join(path, "checkpoints")))
multihost_utils.sync_global_devices("before flip 10")
if jax.process_index() == 0:
    _flip_a_byte_of_u(path, 10)  # element 2002: in the shard [1024:2048], on process 0's second device
multihost_utils.sync_global_devices("flipped 10")
try:
    saver.restore_latest(global_state(0))
except checkpoint.AllCheckpointsCorruptError as e:
    out["all_corrupt"] = str(e)
saver.close()
lock.release()
print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.multihost
def test_two_processes_agree_on_workdir_lock_and_corrupt_steps(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen([sys.executable, "-c", _script(_TWO_PROCESSES), address, str(i), str(tmp_path), REPO],
                              cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.split("RESULT ", 1)[1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [r["held"] for r in results] == [True, False], "only process 0 holds the lock"
    assert "is not empty and was not created by gan_jax" in results[0]["foreign"]
    assert "refused by process 0" in results[1]["foreign"]
    assert sorted(os.listdir(tmp_path / "foreign")) == ["notes.txt"]
    for r in results:
        assert r["digest_files"] == ["commit_success.txt", "process_0.json", "process_1.json"]
        assert r["restored"] == 10 and r["u_ok"] and r["u_spec"] == "P('data',)"
        assert r["listing"] == ["10", "20.corrupt"]
        assert "none of the 1 checkpoint step(s)" in r["all_corrupt"]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10.corrupt", "20.corrupt"]


# ------------------------------------------------------------------------------------------------------------
# What is kept aside and what is not: proven damage (missing or undecodable metadata, truncated files) is renamed
# <step>.corrupt; a fault of the process or its storage (too few file descriptors, no permission, too little
# memory) stops with one line and changes nothing, and the run resumes from that step once the fault is gone.


@pytest.mark.parametrize("damage, name, reason", [
    ("delete", "state/_METADATA", "CorruptCheckpointError: state/_METADATA (the saved tree's metadata) is missing"),
    ("truncate", "config/metadata", "CorruptCheckpointError: JSONDecodeError: "),
    ("truncate", "state/manifest.ocdbt", "CorruptCheckpointError: ValueError: DATA_LOSS: "),
    ("delete", "digests/process_0.json", "CorruptCheckpointError: the digests record is missing from "),
])
def test_missing_or_undecodable_metadata_is_kept_aside(tmp_path, caplog, damage, name, reason):
    _save(tmp_path, [10, 20])
    target = tmp_path / "checkpoints" / "20" / name
    if damage == "delete":
        target.unlink()
    else:
        os.truncate(target, target.stat().st_size // 3)
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0))
    _assert_same(restored, _state(10))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20.corrupt"]
    warning = next(r.getMessage() for r in caplog.records if "step 20 could not be restored" in r.getMessage())
    assert f"({reason}" in warning and "\n" not in warning, warning


_BIG = 1 << 26  # float32 zeros: 256 MiB to restore, a few hundred bytes on disk
# Each fault on its own workdir, in one process: the restore fails with the fault, then (for the file
# descriptors) with every lower limit up to the first one it fits in.
_FAULTS = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
import jax
from gan_jax import checkpoint
from gan_jax.errors import GanJaxError
HELPERS

def attempt(restore):
    try:
        return {"restored": int(restore().step)}
    except Exception as e:
        return {"error": type(e).__name__, "gan_jax_error": isinstance(e, GanJaxError), "message": str(e)}

def limited(limit, value, restore):
    soft, hard = resource.getrlimit(limit)
    resource.setrlimit(limit, (value, hard))
    try:
        return attempt(restore)
    finally:
        resource.setrlimit(limit, (soft, hard))

results = {}
for fault, path in (arg.split("=", 1) for arg in sys.argv[2:]):
    kind = fault.split(":")[0]
    like = _state(0)
    if kind == "memory":
        like = like.replace(generator_state={"big": jax.ShapeDtypeStruct((BIG,), jnp.float32)})
    saver = checkpoint.Checkpointer(path, _small_config())
    restore = lambda: saver.restore_latest(like)
    if kind == "files":  # from "no descriptor free" up to the first limit the restore fits in
        results[fault] = []
        for extra in range(64):
            results[fault].append(limited(resource.RLIMIT_NOFILE, len(os.listdir("/proc/self/fd")) - 1 + extra,
                                          restore))
            if "restored" in results[fault][-1]:
                break
    elif kind == "memory":  # the address space in use + 160 MiB: the 256 MiB array does not fit
        in_use = [int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmSize")][0]
        results[fault] = [limited(resource.RLIMIT_AS, in_use + (160 << 20), restore)]
    else:  # a folder of the step was made unreadable before this process started
        results[fault] = [attempt(restore), attempt(lambda: checkpoint.restore_readonly(path, like)[1])]
print("RESULT " + json.dumps(results), flush=True)
"""


def _without_root_override():
    """The command prefix that runs a process without root's permission override (setpriv), [] if not root."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("running as root without `setpriv` (util-linux): root reads unreadable folders anyway")
    if probe.returncode != 0:
        pytest.skip(f"running as root and `setpriv` cannot drop root's permission override: {probe.stderr}")
    return prefix


def test_faults_that_say_nothing_about_the_files_stop_and_change_nothing(tmp_path):
    """Real limits in a real process (too few file descriptors, a folder of the step unreadable, too little
    memory): each failed restore is one line naming the step, the fault and what to do, nothing on disk changes,
    nothing else is printed; a restore without the fault then resumes from the newest step, bitwise."""
    hints = {"files": "Raise the open-file limit (now ", "permission:20": "Give the user running gan_jax read "
             "access to every file under ", "permission:20/state": "Give the user running gan_jax read access to "
             "every file under ", "memory": "Free host or device memory"}
    big = {"big": jnp.zeros((_BIG,), jnp.float32)}
    workdirs, before = {}, {}
    for i, fault in enumerate(hints):
        workdirs[fault] = tmp_path / str(i)
        if fault == "memory":  # one step (a second one would only cost time)
            saver = ckpt.Checkpointer(str(workdirs[fault]), _small_config())
            saver.save(_state(20).replace(generator_state=big))
            saver.close()
        else:
            _save(workdirs[fault], [10, 20])
        before[fault] = _tree(workdirs[fault])
    prefix = _without_root_override()
    unreadable = [workdirs[f] / "checkpoints" / f.split(":")[1] for f in hints if f.startswith("permission")]
    for folder in unreadable:
        folder.chmod(0)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", _script(_FAULTS).replace("BIG", str(_BIG)), REPO,
                               *(f"{f}={workdirs[f]}" for f in hints)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    finally:
        for folder in unreadable:
            folder.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for fault, hint in hints.items():
        attempts = results[fault]
        failures = [r for r in attempts if "error" in r]
        assert failures, (fault, attempts)
        for r in failures:
            assert r["error"] == "CheckpointReadError" and r["gan_jax_error"], (fault, r)
            message = r["message"]
            assert "\n" not in message and message.startswith("checkpoint step 20 in "), (fault, message)
            assert "nothing was renamed or deleted" in message and hint in message, (fault, message)
        ends = {"files": ["rerun: it resumes from step 20."] * len(failures), "memory": ["rerun: it resumes from "
                "step 20."]}.get(fault, ["rerun: it resumes from step 20.", "retry."])  # the last: restore_readonly
        assert [r["message"][-len(e):] for r, e in zip(failures, ends)] == ends, (fault, failures)
        if fault == "files":
            assert attempts[-1] == {"restored": 20} and len(failures) >= 2, attempts
        assert _tree(workdirs[fault]) == before[fault], f"{fault}: nothing on disk may change"
        like = _state(0).replace(generator_state=big) if fault == "memory" else _state(0)
        restored = ckpt.Checkpointer(str(workdirs[fault]), _small_config()).restore_latest(like)
        if fault == "memory":
            assert restored.generator_state["big"].shape == (_BIG,)
            assert not np.asarray(restored.generator_state["big"]).any()
            restored = restored.replace(generator_state={})
        _assert_same(restored, _state(20))


# ------------------------------------------------------------------------------------------------------------
# Digests off the loop's path, per shard: states sharded over devices save, verify and restore bitwise.


def test_save_takes_its_host_copies_before_it_returns(tmp_path):
    """A train step donates the state it is given: once `save` has returned, the arrays may be gone, and the
    digests (hashed later, in the background) must still be those of the values saved."""
    saver = ckpt.Checkpointer(str(tmp_path), _small_config())
    state = _state(5)
    saver.save(state)
    for leaf in jax.tree.leaves(state):
        leaf.delete()
    saver.close()
    record = json.loads((tmp_path / "checkpoints" / "5" / "digests" / "process_0.json").read_text())
    u = np.asarray(_state(5).critic_state["u"])
    assert record["arrays"][".critic_state['u']"]["shards"] == {"[0:4096]": hashlib.sha256(u.tobytes()).hexdigest()}
    _assert_same(ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(_state(0)), _state(5))


_CUT_SHORT = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
import jax
from gan_jax import checkpoint, workdir
HELPERS
path = sys.argv[1]
saver = checkpoint.Checkpointer(path, _small_config(), lock=workdir.acquire(path, is_writer=True))
saver.save(_state(20).replace(generator_state={"big": jnp.zeros((BIG,), jnp.float32)}))
os._exit(0)  # dies the moment the loop has control back: the save's digests are not hashed yet
"""


def test_a_save_cut_short_before_its_digests_are_written_leaves_no_step_to_distrust(tmp_path):
    """A step is committed with its digests or not at all: a process that dies while its save's digests are being
    hashed (16 MiB of them, hashed only once `save` has returned) leaves an unfinished save, never a step without
    digests or one kept aside as corrupt; the next run resumes from the step before."""
    path = workdir_lib.prepare(str(tmp_path / "run"), is_writer=True)
    big = {"big": jnp.zeros((1 << 22,), jnp.float32)}
    saver = ckpt.Checkpointer(path, _small_config())
    saver.save(_state(10).replace(generator_state=big))
    saver.close()
    proc = subprocess.run([sys.executable, "-c", _script(_CUT_SHORT).replace("BIG", str(1 << 22)), path, REPO],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = os.path.join(path, "checkpoints")
    assert "20" not in os.listdir(checkpoints), os.listdir(checkpoints)
    like = _state(0).replace(generator_state=big)
    assert ckpt.restore_readonly(path, like)[0] == 10
    with workdir_lib.acquire(path, is_writer=True) as lock:
        saver = ckpt.Checkpointer(path, _small_config(), lock=lock)  # removes the unfinished save
        restored = saver.restore_latest(like)
        saver.close()
    assert sorted(os.listdir(checkpoints)) == ["10"]
    assert not np.asarray(restored.generator_state["big"]).any()
    _assert_same(restored.replace(generator_state={}), _state(10))


def _sharded_state(step, devices):
    """`_state(step)` with a critic kernel, placed as a sharded run places it on a `data` mesh over `devices`:
    the kernel split over its columns, critic_state['u'] over its elements, everything else replicated."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.array(devices), ("data",))
    state = _state(step)
    kernel = np.random.default_rng(100 + step).standard_normal((8, 64)).astype(np.float32)
    state = state.replace(critic_params={**state.critic_params, "kernel": jnp.asarray(kernel)})
    specs = {".critic_params['kernel']": P(None, "data"), ".critic_state['u']": P("data")}
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.device_put(x, NamedSharding(mesh, specs.get(jax.tree_util.keystr(path), P()))), state)


def test_a_sharded_state_saves_verifies_and_restores_bitwise(tmp_path, caplog):
    devices = jax.devices()[:4]
    assert len(devices) == 4, "tests/conftest.py sets 4 simulated CPU devices"
    saver = ckpt.Checkpointer(str(tmp_path), _small_config())
    for step in (10, 20):
        saver.save(_sharded_state(step, devices))
    saver.close()
    # One digest per shard, keyed by its region, each the SHA-256 of that slice's bytes.
    record = json.loads((tmp_path / "checkpoints" / "20" / "digests" / "process_0.json").read_text())
    kernel = np.asarray(_sharded_state(20, devices).critic_params["kernel"])
    assert record["arrays"][".critic_params['kernel']"]["shards"] == {
        f"[0:8, {a}:{a + 16}]": hashlib.sha256(np.ascontiguousarray(kernel[:, a:a + 16]).tobytes()).hexdigest()
        for a in range(0, 64, 16)}
    assert list(record["arrays"][".critic_state['u']"]["shards"]) == ["[0:1024]", "[1024:2048]", "[2048:3072]",
                                                                     "[3072:4096]"]
    assert list(record["arrays"][".step"]["shards"]) == ["[]"]
    # Restored into the shardings of `like`, verified, bitwise.
    like = _sharded_state(0, devices)
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(like)
    _assert_same(restored, _sharded_state(20, devices))
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(like)):
        assert got.sharding == want.sharding
    assert "could not be verified" not in caplog.text
    # Restored whole on one device, every saved region is checked there.
    step, whole = ckpt.restore_readonly(str(tmp_path), _sharded_state(0, devices[:1]))
    assert step == 20 and whole.critic_params["kernel"].sharding.num_devices == 1
    _assert_same(whole, _sharded_state(20, devices))
    # One flipped bit in the last shard of u: that region is named, the step kept aside, the one before used.
    _flip_a_byte_of_u(str(tmp_path), 20, at=14000)  # element 3502
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(like)
    _assert_same(restored, _sharded_state(10, devices))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20.corrupt"]
    assert "array .critic_state['u'][3072:4096] does not match its saved sha256 digest" in caplog.text


def test_a_state_restored_more_finely_sharded_than_saved_says_what_it_could_not_verify(tmp_path, caplog):
    saver = ckpt.Checkpointer(str(tmp_path), _small_config())
    saver.save(_sharded_state(10, jax.devices()[:1]))  # whole arrays: one region each
    saver.close()
    with caplog.at_level(logging.WARNING):
        restored = ckpt.Checkpointer(str(tmp_path), _small_config()).restore_latest(
            _sharded_state(0, jax.devices()[:4]))
    _assert_same(restored, _sharded_state(10, jax.devices()[:1]))
    assert "2 of its 6 saved array regions could not be verified" in caplog.text  # the kernel and u


def test_readonly_restore_of_a_given_step(tmp_path):
    _save(tmp_path, [10, 20, 30])
    step, state = ckpt.restore_readonly(str(tmp_path), _state(0), step=20)
    assert step == 20
    _assert_same(state, _state(20))
    with pytest.raises(ckpt.NoValidCheckpointError, match=r"no committed checkpoint of step 25 in .*checkpoints"):
        ckpt.restore_readonly(str(tmp_path), _state(0), step=25)
    _flip_a_byte_of_u(str(tmp_path), 20)
    with pytest.raises(ckpt.NoValidCheckpointError, match=r"20 \(CorruptCheckpointError: array \.critic_state"):
        ckpt.restore_readonly(str(tmp_path), _state(0), step=20)
