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


def _flip_a_byte_of_u(workdir, step):
    """Flips one bit inside the stored bytes of `critic_state['u']` of `step` (orbax restores it silently)."""
    pattern = np.asarray(_state(step).critic_state["u"]).tobytes()[8000:8064]
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
    record = ckpt.state_digests(_state(3))
    assert record["algorithm"] == "sha256"
    assert set(record["arrays"]) == {".step", ".generator_params['w']", ".critic_params['v']",
                                     ".critic_state['u']", ".key"}
    assert record["arrays"][".key"]["dtype"] == "uint32" and record["arrays"][".key"]["shape"] == [2]
    assert ckpt.state_digests(_state(3)) == record
    assert ckpt.state_digests(_state(4))["arrays"][".key"] != record["arrays"][".key"]


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


# Two processes with jax.distributed (gloo): prepare/acquire agree, the Checkpointer saves and verifies fully
# replicated global arrays, quarantines a corrupt step (renamed once, by process 0) and raises on all-corrupt.
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
    def one(leaf):
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        host = np.asarray(jax.random.key_data(leaf) if is_key else leaf)
        arr = jax.make_array_from_callback(host.shape, NamedSharding(mesh, P()), lambda idx: host[idx])
        return jax.random.wrap_key_data(arr) if is_key else arr
    return jax.tree.map(one, _state(step))

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
if jax.process_index() == 0:
    _flip_a_byte_of_u(path, 20)
multihost_utils.sync_global_devices("flipped 20")
restored = saver.restore_latest(global_state(0))
out["restored"] = int(np.asarray(restored.step.addressable_data(0)))
out["u_ok"] = bool(np.array_equal(np.asarray(restored.critic_state["u"].addressable_data(0)),
                                  np.asarray(_state(10).critic_state["u"])))
multihost_utils.sync_global_devices("listed")
out["listing"] = sorted(os.listdir(os.path.join(path, "checkpoints")))
multihost_utils.sync_global_devices("before flip 10")
if jax.process_index() == 0:
    _flip_a_byte_of_u(path, 10)
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
        assert r["restored"] == 10 and r["u_ok"]
        assert r["listing"] == ["10", "20.corrupt"]
        assert "none of the 1 checkpoint step(s)" in r["all_corrupt"]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10.corrupt", "20.corrupt"]
