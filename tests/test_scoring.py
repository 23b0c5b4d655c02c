"""gan_jax.scoring and experiments.evaluate: streamed scores equal the metrics of all samples at once, the
extractor is named in every key, and a read-only evaluation of a workdir gives the run's own final numbers
without writing anything."""

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import common
from gan_jax import evaluation, extractors, scoring, trainer
from gan_jax.data import make_source
from gan_jax.errors import GanJaxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAN_JAX_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))


def _ring(n=600, batch=500):
    cfg = common.toy("ring8", "gan", "smoke")
    cfg.train.eval_samples, cfg.eval.batch_size = n, batch
    return cfg


def _points_generator(dist, n, seed=0):
    """generate(start, stop) over n fixed points around the mixture's centres, spread too narrow (0.6 σ)."""
    rng = np.random.default_rng(seed)
    means = np.asarray(dist.means)
    x = means[rng.integers(0, len(means), n)] + 0.6 * dist.std * rng.standard_normal((n, means.shape[1]))
    return x.astype(np.float32), lambda start, stop: (x[start:stop], None)


def test_streamed_toy_scores_equal_the_metrics_of_all_samples_at_once():
    cfg = _ring()
    source = make_source(cfg.data)
    x, generate = _points_generator(source.distribution, cfg.train.eval_samples)
    key = jax.random.key(3)
    scorer = scoring.Scorer(cfg, source, key)
    scores = scorer(generate)
    assert scorer(generate) == scores  # the reference, computed once, is reused
    cfg.eval.batch_size = 7  # another batching of the same samples (and of the reference draws)
    again = scoring.Scorer(cfg, source, key)(generate)
    for name in ("points/fd", "points/kid", "points/precision", "points/recall", "points/density",
                 "points/coverage", "modes_captured", "high_quality"):
        np.testing.assert_allclose(again[name], scores[name], rtol=1e-9, atol=1e-12, err_msg=name)
    # The real side: the distribution's draws with the data half of the key, as the reference packages get them.
    real = np.asarray(source.sample(source.arrays, jax.random.split(key)[0], 0, len(x)).x, np.float32)
    direct = evaluation.compute(["fid", "pr", "dc"], real, x, options={"pr": {"k": 3}, "dc": {"k": 5}})
    np.testing.assert_allclose(scores["points/fd"], direct["fid"], rtol=1e-9)
    for name in ("precision", "recall", "density", "coverage"):
        np.testing.assert_allclose(scores[f"points/{name}"], direct[name], rtol=1e-12)
    assert "points/is" not in scores and "points/fid" not in scores  # no logits; never called FID
    assert scores["modes_captured"] == 8


def test_streamed_class_scores_equal_the_classifier_metrics_of_all_samples_at_once():
    """Digits drawn "for" labels, half of them wrong: the Scorer's class coverage, reverse KL and per-class accuracy,
    streamed in batches of 7, equal metrics.class_coverage and metrics.class_accuracy of all the samples."""
    from gan_jax import metrics

    cfg = common.images("digits", "wgan_gp", "smoke")
    cfg.train.eval_samples, cfg.eval.batch_size, cfg.eval.metrics = 300, 7, "none"
    source = make_source(cfg.data)
    real = source.real_batch(range(1000))
    classifier = metrics.train_classifier(real.x, real.y, jax.random.key(0), steps=200)
    x = real.x[:300]
    labels = np.where(np.arange(300) % 2 == 0, real.y[:300], (real.y[:300] + 1) % 10).astype(np.int32)
    scores = scoring.Scorer(cfg, source, jax.random.key(1), classifier=classifier)(
        lambda start, stop: (x[start:stop], labels[start:stop]))
    coverage = metrics.class_coverage(classifier, x)
    assert scores["classes_covered"] == int(coverage.classes_covered) == 10
    np.testing.assert_allclose(scores["class_reverse_kl"], float(coverage.reverse_kl), rtol=1e-6)
    accuracy = float(metrics.class_accuracy(classifier, x, labels))
    np.testing.assert_allclose(scores["class_accuracy"], accuracy, rtol=1e-6)
    assert 0.3 < accuracy < 0.55  # half the labels are wrong; the classifier is right on most of the others


def test_metric_names_are_checked_against_the_extractor():
    cfg = _ring()
    source = make_source(cfg.data)
    points = extractors.build("auto", source)
    assert points.name == "points"
    cfg.eval.metrics = "fid,is"
    with pytest.raises(GanJaxError, match="no class logits"):
        scoring.metric_names(cfg, points)
    cfg.eval.metrics = "fid,kidd"
    with pytest.raises(ValueError, match="kidd.*fid, kid, is, pr, dc"):
        scoring.metric_names(cfg, points)
    with pytest.raises(GanJaxError, match="is not images.*extractor=points"):
        extractors.build("classifier", source)  # toy data have no classifier
    assert extractors.metric_label("fid", "inception") == "fid"
    assert extractors.metric_label("fid", "classifier") == "fd"


def _tree_hash(root):
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                digests[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _evaluate(*args, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.evaluate", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_evaluate_reads_a_finished_digits_run_and_matches_its_summary(tmp_path):
    cfg = common.images("digits", "wgan_gp", "smoke")
    cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every, cfg.train.sample_every = 10, 5, 5, 0
    cfg.train.eval_samples, cfg.eval.batch_size = 300, 128
    cfg.train.eval_every, cfg.train.max_to_keep, cfg.eval.best_metric = 5, 1, "classifier/fd"
    workdir = tmp_path / "run"
    summary = trainer.train_and_evaluate(cfg, str(workdir), progress=False)
    # The best step by FD of the two evaluations (step 5 in the loop, step 10 at the end) is kept in best/,
    # though max_to_keep=1 left only step 10 in checkpoints/.
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    fds = {r["step"]: r["eval/classifier/fd"] for r in logged if "eval/classifier/fd" in r}
    fds[10] = summary["classifier/fd"]
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert set(fds) == {5, 10} and best["step"] == min(fds, key=fds.get) and best["value"] == min(fds.values())
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10"]
    for name in ("classifier/fd", "classifier/kid", "classifier/is", "classifier/precision", "classifier/coverage"):
        assert np.isfinite(summary[name]), name
    assert summary["reference"].startswith("1797 records of digits")
    before = _tree_hash(workdir)

    result = _evaluate(f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["step"] == 10
    for name in ("classifier/fd", "classifier/kid", "classifier/is", "classifier/recall", "sliced_w1"):
        assert printed[name] == pytest.approx(summary[name], rel=1e-6), name  # the run's own final numbers
    assert "| classifier/fd |" in result.stdout

    out = tmp_path / "fewer.json"
    result = _evaluate(f"--workdir={workdir}", "--step=10", "--metrics=fid,pr", "--num_samples=200", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    fewer = json.loads(out.read_text())
    assert fewer["step"] == 10 and fewer["samples"] == 200
    assert "classifier/fd" in fewer and "classifier/kid" not in fewer
    result = _evaluate(f"--workdir={workdir}", "--step=best", "--metrics=fid")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["step"] == best["step"] and printed["classifier/fd"] == pytest.approx(best["value"], rel=1e-6)
    assert _tree_hash(workdir) == before  # nothing written in the workdir


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
    cfg = common.toy("ring8", "gan", "smoke")
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.sample_every = 10, 10, 0
    workdir = tmp_path_factory.mktemp("toy")
    trainer.train_and_evaluate(cfg, str(workdir), progress=False)
    return workdir


@pytest.mark.parametrize("args, message", [
    (["--step=7"], "committed steps: 10"),
    (["--metrics=fid,bogus"], "bogus"),
    (["--extractor=inception"], "takes images"),
    (["--out={workdir}/x.json"], "inside the workdir"),
    (["--workdir={tmp}/nowhere"], "not a gan_jax workdir"),
])
def test_evaluate_bad_input_is_one_line_and_writes_nothing(toy_workdir, tmp_path, args, message):
    args = [a.format(workdir=toy_workdir, tmp=tmp_path) for a in args]
    if not any(a.startswith("--workdir") for a in args):
        args.insert(0, f"--workdir={toy_workdir}")
    before = _tree_hash(toy_workdir)
    result = _evaluate(*args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert _tree_hash(toy_workdir) == before and os.listdir(tmp_path) == []
