"""Tests for gan_jax.plotting: each figure is a readable, non-empty PNG of the expected content."""

import matplotlib.image
import numpy as np
import pytest

from gan_jax import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ring(n=400, seed=0):
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(8) / 8
    centers = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    samples = centers[rng.integers(0, 8, n)] + 0.05 * rng.standard_normal((n, 2))
    return samples, centers


def _read_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    return image


def test_scatter_samples_2d_writes_png(tmp_path):
    samples, centers = _ring()
    data, _ = _ring(seed=1)
    path = tmp_path / "sub" / "ring.png"
    out = plotting.scatter_samples(path, samples, data=data, centers=centers, title="ring", lim=1.5)
    assert out == str(path)
    image = _read_png(out)
    # Equal aspect with equal limits: the figure is close to square.
    assert 0.7 < image.shape[0] / image.shape[1] < 1.4


def test_scatter_samples_1d_histogram(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((500, 1))
    out = plotting.scatter_samples(tmp_path / "hist.png", samples, data=samples + 3, centers=np.array([[0.0], [3.0]]))
    _read_png(out)


def test_scatter_samples_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"samples must have shape \(n, 1\) or \(n, 2\), got \(10, 3\)"):
        plotting.scatter_samples(tmp_path / "bad.png", np.zeros((10, 3)))
    with pytest.raises(ValueError, match="centers has dimension 1 but samples have 2"):
        plotting.scatter_samples(tmp_path / "bad.png", np.zeros((10, 2)), centers=np.zeros((3, 1)))


def test_scatter_grid_writes_png(tmp_path):
    samples, centers = _ring()
    panels = [(f"method {m}, seed {s}", samples + 0.01 * s) for m in "AB" for s in range(3)]
    out = plotting.scatter_grid(tmp_path / "grid.png", panels, centers=centers, ncols=3)
    image = _read_png(out)
    assert 1.2 < image.shape[1] / image.shape[0] < 1.8  # 3 columns x 2 rows of square panels
    with pytest.raises(ValueError, match="at least one"):
        plotting.scatter_grid(tmp_path / "empty.png", [])


def test_image_grid_white_images_are_white(tmp_path):
    out = plotting.image_grid(tmp_path / "white.png", np.ones((4, 8, 8, 1)), nrow=2)
    image = _read_png(out)
    # 2 x 2 cells of 64 px (8 px enlarged x8) and 2-px grey separators.
    assert image.shape[:2] == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)
    rgb = image[..., :3]
    white = np.all(rgb > 0.99, axis=-1)
    assert white.mean() > 0.9
    assert white[2:66, 2:66].all()


def test_image_grid_pixel_values_and_rgb(tmp_path):
    images = np.stack([-np.ones((8, 8, 3)), np.zeros((8, 8, 3)), np.ones((8, 8, 3))])
    image = _read_png(plotting.image_grid(tmp_path / "rgb.png", images, nrow=3))
    assert image.shape[:2] == (64 + 4, 3 * 64 + 4 * 2)
    np.testing.assert_allclose(image[30, 30, :3], 0.0, atol=1 / 255)  # -1 -> black
    np.testing.assert_allclose(image[30, 66 + 30, :3], 0.5, atol=1 / 255)  # 0 -> mid grey
    np.testing.assert_allclose(image[30, 132 + 30, :3], 1.0, atol=1 / 255)  # 1 -> white
    with pytest.raises(ValueError, match=r"C in \(1, 3\), got \(2, 8, 8, 2\)"):
        plotting.image_grid(tmp_path / "bad.png", np.zeros((2, 8, 8, 2)))


def test_curves_handles_inf_and_nan(tmp_path):
    theta = np.linspace(-1, 1, 11)
    kl = np.where(theta == 0, 0.0, np.inf)
    js = np.where(theta == 0, 0.0, np.log(2))
    w = np.abs(theta)
    w[3] = np.nan
    out = plotting.curves(tmp_path / "div.png", theta, {"KL": kl, "JSD": js, "W": w, "neg": -kl}, "θ", "divergence")
    _read_png(out)
    out = plotting.curves(tmp_path / "log.png", theta, {"KL": kl, "W": w + 1e-3}, "θ", "d", title="log", logy=True)
    _read_png(out)
    out = plotting.curves(tmp_path / "allinf.png", theta, {"KL": np.full(11, np.inf)}, "θ", "KL")
    _read_png(out)


def test_curves_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"ys\['loss'\] has shape \(3,\), expected x's shape \(4,\)"):
        plotting.curves(tmp_path / "bad.png", np.arange(4), {"loss": np.zeros(3)}, "step", "loss")


def test_leaves_no_open_figures(tmp_path):
    import matplotlib.pyplot as plt

    samples, centers = _ring()
    plotting.scatter_samples(tmp_path / "a.png", samples, centers=centers)
    plotting.curves(tmp_path / "b.png", np.arange(3), {"y": np.arange(3.0)}, "x", "y")
    assert plt.get_fignums() == []
