"""gan_jax.trainer with real image data: the device and streamed pipelines give the same run, class-conditional
training (labels reach the generator's output), generator batch-norm state, metrics chosen by what the data
have, the periodic-action table, and an image folder prepared by experiments.prepare_images trained end to end.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments.configs import common
from gan_jax import engine as engine_lib
from gan_jax import parallel, trainer
from gan_jax.data import folders, make_source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    """One offline digits dataset for the module's runs."""
    monkeypatch.setenv("GAN_JAX_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))


def _digits(pipeline="device", steps=10, **changes):
    cfg = common.images("digits", "wgan_gp", "smoke")
    cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every, cfg.train.sample_every = steps, 5, 5, 0
    cfg.train.eval_samples = 200
    cfg.data.pipeline = pipeline
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    return cfg


def _arrays(state):
    as_numpy = lambda x: np.asarray(
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    return [as_numpy(leaf) for leaf in jax.tree.leaves(state)]


def _metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "steps_per_sec"} for line in lines]


@pytest.mark.parametrize("conditional", [False, True])
def test_streamed_and_device_pipelines_train_bitwise_the_same_run(tmp_path, conditional):
    # The streamed host reader picks the records the device path draws inside the step, and both convert the
    # uint8 pixels on the device with one function: parameters, metrics and evaluation agree bit for bit.
    changes = dict(model__num_classes=10, model__generator_batch_norm=True) if conditional else {}
    summaries = {}
    for pipeline in ("device", "streamed"):
        summaries[pipeline] = trainer.train_and_evaluate(_digits(pipeline, **changes), str(tmp_path / pipeline),
                                                         progress=False)
    device, streamed = tmp_path / "device", tmp_path / "streamed"
    for a, b in zip(_arrays(trainer.restore_state(str(device))), _arrays(trainer.restore_state(str(streamed)))):
        np.testing.assert_array_equal(a, b)
    assert _metrics(device) == _metrics(streamed)
    assert summaries["device"]["pipeline"] == "device" and summaries["streamed"]["pipeline"] == "streamed"
    # 10 steps × (n_critic = 5) batches × 64 records, each read once by the one process.
    assert summaries["streamed"]["records_read"] == 10 * 5 * 64
    for name in ("sliced_w1", "classifier/fd", "classifier/is", "classes_covered"):
        assert summaries["device"][name] == summaries["streamed"][name], name
    assert ("class_accuracy" in summaries["device"]) == conditional


def test_auto_pipeline_streams_what_does_not_fit_the_device_budget(tmp_path):
    cfg = _digits("auto", steps=5, data__device_budget_mb=0.1)  # the digits take 1797·(64 + 4) B = 0.12 MiB
    assert make_source(cfg.data).pipeline == "streamed"
    cfg.data.device_budget_mb = 0.2
    assert make_source(cfg.data).pipeline == "device"


def test_conditional_generator_uses_its_labels_and_the_figure_has_a_row_per_class(tmp_path):
    cfg = _digits("device", model__num_classes=10)
    summary = trainer.train_and_evaluate(cfg, str(tmp_path), progress=False)
    assert all(np.isfinite(m[k]) for m in _metrics(tmp_path) for k in ("critic_loss", "generator_loss"))
    state = trainer.restore_state(str(tmp_path))
    engine = engine_lib.make_engine(cfg, (8, 8, 1))
    z = jax.random.normal(jax.random.key(0), (10, cfg.model.latent_dim))
    labels = jnp.arange(10, dtype=jnp.int32)
    sample = engine_lib.make_sampler(engine)
    # One latent, ten labels: ten different images.
    same_z = sample(state.generator_params, jnp.tile(z[:1], (10, 1)), labels)
    assert min(float(jnp.max(jnp.abs(same_z[i] - same_z[j]))) for i in range(10) for j in range(i)) > 0
    # ∂ G(z, y) / ∂ (label embedding) is non-zero: the label reaches the output.
    def output(embedding):
        params = dict(state.generator_params, label_embedding={"embedding": embedding})
        return jnp.sum(sample(params, z, labels) ** 2)
    grad = jax.grad(output)(state.generator_params["label_embedding"]["embedding"])
    assert grad.shape == (10, cfg.model.latent_dim) and np.all(np.abs(np.asarray(grad)).sum(axis=1) > 0)
    # The final figure: 10 rows (one per class) of 8 images of 64 px with 2 px borders.
    height, width = Image.open(summary["figure"]).size[::-1]
    assert (height, width) == (10 * 66 + 2, 8 * 66 + 2)
    assert 0.0 <= summary["class_accuracy"] <= 1.0


def test_generator_batch_norm_statistics_are_trained_averaged_over_devices_and_saved(tmp_path):
    cfg = _digits("device", model__generator_batch_norm=True)
    trainer.train_and_evaluate(cfg, str(tmp_path), progress=False)
    saved = trainer.restore_state(str(tmp_path))
    engine = engine_lib.make_engine(cfg, (8, 8, 1))
    fresh = engine_lib.create_state(cfg, engine, (8, 8, 1))
    stats = jax.tree.leaves(saved.generator_state)
    assert stats and len(stats) == len(jax.tree.leaves(fresh.generator_state))
    assert any(not np.allclose(a, b) for a, b in zip(stats, jax.tree.leaves(fresh.generator_state)))
    # Batch norm is synchronised over the data axis: 4 devices (16 rows each) compute the batch statistics of
    # all 64 rows, so the first step's running statistics (from the initial generator) equal one device's to
    # float32 rounding. (Later steps are not compared: Adam turns rounding-level gradient differences of
    # near-zero gradients into full-size steps.)
    source = make_source(cfg.data)
    results = []
    for devices in (1, 4):
        mesh = parallel.make_mesh(devices)
        cfg.train.steps_per_call = 1
        state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
        step = engine_lib.make_train_step(cfg, engine, source, mesh)
        state, _ = step(state, parallel.replicate(source.arrays, mesh))
        results.append(jax.device_get(state.generator_state))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_labels_must_match_the_data(tmp_path):
    with pytest.raises(ValueError, match=r"num_classes=7 but dataset 'digits' has 10 classes.*num_classes=10"):
        trainer.train_and_evaluate(_digits(model__num_classes=7), str(tmp_path / "a"), progress=False)
    ring = common.toy("ring8", "wgan_gp", "smoke")
    ring.model.num_classes = 3
    with pytest.raises(ValueError, match="has no labels: set --config.model.num_classes=0"):
        trainer.train_and_evaluate(ring, str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_periodic_evaluation_is_logged_from_the_action_table(tmp_path):
    cfg = common.toy("ring8", "wgan_gp", "smoke")  # 20 steps, 5 per call
    cfg.train.eval_every, cfg.train.eval_samples = 10, 256
    summary = trainer.train_and_evaluate(cfg, str(tmp_path), progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evaluations = [line for line in lines if "eval/sliced_w1" in line]
    assert [line["step"] for line in evaluations] == [10]  # step 20 is the final evaluation, in the summary
    assert {"eval/modes_captured", "eval/high_quality", "eval/sliced_w1"} <= set(evaluations[0])
    assert [line["step"] for line in lines if "critic_loss" in line] == [5, 10, 15, 20]
    assert summary["n_modes"] == 8 and "sliced_w1" in summary
    assert [p.name for p in trainer.PERIODIC] == ["log", "figure", "evaluate", "checkpoint"]


def _image_folder(root, classes=3, per_class=6, size=12):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "class_0" / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_prepared_by_the_cli_trains_conditionally_and_streamed(tmp_path):
    src, data_dir = _image_folder(tmp_path / "photos"), tmp_path / "data"
    prepare = subprocess.run(
        [sys.executable, "-m", "experiments.prepare_images", f"--src={src}", "--name=my_photos", "--image_size=8",
         f"--data_dir={data_dir}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    train_line = prepare.stdout.strip().splitlines()[-1].strip()
    assert "--config.data.name=my_photos" in train_line
    args = train_line.split()[2:]  # after "python -m"
    args[1] += ":smoke"  # --config=experiments/configs/folder_gan.py:smoke
    workdir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", *args, f"--workdir={workdir}", "--config.data.batch_size=8",
         "--config.model.num_classes=3", "--config.data.pipeline=streamed", "--config.train.steps=10",
         "--config.train.eval_samples=30"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["pipeline"] == "streamed" and summary["classes_covered"] <= 3
    assert "data: my_photos, 18 records of 8×8×3 uint8, 3 classes" in train.stderr
    bad = subprocess.run(
        [sys.executable, "-m", *args, f"--workdir={tmp_path / 'bad'}", "--config.model.num_classes=4"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("gan_jax: error:")
    assert "num_classes=4 but dataset 'my_photos' has 3 classes" in bad.stderr
    assert not (tmp_path / "bad").exists()
    assert len(folders.open_records("my_photos", data_dir)) == 18
