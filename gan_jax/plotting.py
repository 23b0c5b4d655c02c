"""PNG figures: sample scatters with mode centres, panels of scatters, image grids, curves with ∞ marked.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global backend change, no
window): every function takes the output path (local, or a URL such as gs://... that `etils.epath` supports),
writes the PNG (creating its folder), and returns the path as a str.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import matplotlib.image
import numpy as np
from etils import epath
from numpy.typing import ArrayLike
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SAMPLE_COLOR = "tab:blue"
DATA_COLOR = "tab:orange"
CENTER_COLOR = "black"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _write_png(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> str:
    """``write(file)`` into the file at ``path``, its folder created; returns ``path`` as a str."""
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as f:
        write(f)
    return os.fspath(path)


def _save(fig: Figure, path: str | os.PathLike) -> str:
    return _write_png(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))


def _points(x: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        raise ValueError(f"{name} must have shape (n, 1) or (n, 2), got {x.shape}")
    return x


def _limits(lim: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if lim is None:
        return None
    if np.ndim(lim) == 0:
        return (-float(lim), float(lim))
    lo, hi = lim
    return (float(lo), float(hi))


def _draw_samples(ax: Axes, samples, data=None, centers=None, title=None, lim=None, legend=True) -> None:
    """Scatter for 2-D samples (equal aspect), density histogram for 1-D; data and centres overlaid.

    The legend, if any, goes below the axes so that it never hides a mode.
    """
    samples = _points(samples, "samples")
    dim = samples.shape[1]
    data = None if data is None else _points(data, "data")
    centers = None if centers is None else _points(centers, "centers")
    for name, other in (("data", data), ("centers", centers)):
        if other is not None and other.shape[1] != dim:
            raise ValueError(f"{name} has dimension {other.shape[1]} but samples have {dim}")
    lim = _limits(lim)
    if dim == 1:
        edges = np.histogram_bin_edges(
            np.concatenate([samples[:, 0]] + ([] if data is None else [data[:, 0]])), bins=60, range=lim
        )
        if data is not None:
            ax.hist(data[:, 0], bins=edges, density=True, alpha=0.5, color=DATA_COLOR, label="data")
        ax.hist(samples[:, 0], bins=edges, density=True, alpha=0.5, color=SAMPLE_COLOR, label="samples")
        if centers is not None:
            for c in centers[:, 0]:
                ax.axvline(c, color=CENTER_COLOR, linestyle="--", linewidth=0.8)
        if lim is not None:
            ax.set_xlim(lim)
    else:
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=2, alpha=0.4, color=DATA_COLOR, label="data", linewidths=0)
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.6, color=SAMPLE_COLOR, label="samples", linewidths=0)
        if centers is not None:
            # Hollow rings drawn under the samples: a tight cluster on its centre stays visible.
            ax.scatter(centers[:, 0], centers[:, 1], s=60, marker="o", facecolors="none", edgecolors=CENTER_COLOR,
                       linewidths=0.7, zorder=0.9, label="mode centres")
        if lim is not None:
            ax.set_xlim(lim)
            ax.set_ylim(lim)
        ax.set_aspect("equal", adjustable="box")
    if legend and (data is not None or centers is not None):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize="small", markerscale=2)
    if title is not None:
        ax.set_title(title)


def scatter_samples(
    path: str | os.PathLike,
    samples: ArrayLike,
    data: ArrayLike | None = None,
    centers: ArrayLike | None = None,
    title: str | None = None,
    lim: float | tuple[float, float] | None = None,
) -> str:
    """PNG at ``path`` (returned): samples (n, 2) over data and mode centres (hollow circles); (n, 1) → histograms.

    Args:
      lim: axis range, ``a`` for [−a, a] or ``(lo, hi)``; both axes in 2-D, the x axis in 1-D.
    """
    fig = _new_figure(5, 5)
    _draw_samples(fig.add_subplot(), samples, data, centers, title, lim)
    return _save(fig, path)


def scatter_grid(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, ArrayLike]],
    centers: ArrayLike | None = None,
    ncols: int = 4,
    lim: float | tuple[float, float] | None = None,
    data: ArrayLike | None = None,
) -> str:
    """PNG at ``path`` (returned): ``scatter_samples`` panels (title, samples) in rows of ``ncols`` (methods × seeds).

    Centres (hollow circles) and ``data`` (in DATA_COLOR, under the samples) are drawn in every panel; a legend
    only when ``data`` is given.
    """
    if len(panels) == 0:
        raise ValueError("panels must hold at least one (title, samples) pair, got none")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(3 * ncols, 3 * nrows)
    for i, (title, samples) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _draw_samples(ax, samples, data=data, centers=centers, title=title, lim=lim, legend=data is not None)
    return _save(fig, path)


def image_grid(path: str | os.PathLike, images: ArrayLike, nrow: int = 8) -> str:
    """PNG at ``path`` (returned): images (n, H, W, C) in [−1, 1] tiled in rows of ``nrow`` (grey C = 1, RGB C = 3).

    Written pixel for pixel (no axes), each image enlarged by an integer factor to at least 64 px high,
    cells separated by 2 grey pixels; values are clipped to [−1, 1] and mapped to [0, 1].
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (n, H, W, C) with n >= 1 and C in (1, 3), got {images.shape}")
    if nrow < 1:
        raise ValueError(f"nrow (images per row) must be >= 1, got {nrow}")
    n, h, w, c = images.shape
    scale = max(1, math.ceil(64 / h))
    images = (np.clip(images, -1.0, 1.0) + 1.0) / 2.0
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    ncols = min(nrow, n)
    nrows = math.ceil(n / ncols)
    pad, ch, cw = 2, h * scale, w * scale
    canvas = np.full((nrows * (ch + pad) + pad, ncols * (cw + pad) + pad, c), 0.5)
    for i, image in enumerate(images):
        top = pad + (i // ncols) * (ch + pad)
        left = pad + (i % ncols) * (cw + pad)
        canvas[top : top + ch, left : left + cw] = image
    gray = dict(cmap="gray", vmin=0.0, vmax=1.0) if c == 1 else {}
    return _write_png(path, lambda f: matplotlib.image.imsave(f, canvas[..., 0] if c == 1 else canvas, format="png",
                                                              **gray))


def _y_range(ys: Sequence[np.ndarray], logy: bool) -> tuple[float, float]:
    """Range of the finite (positive, on a log axis) values, widened when empty or a single value."""
    finite = np.concatenate([y[np.isfinite(y) & ((y > 0) if logy else True)] for y in ys])
    if finite.size == 0:
        return (1.0, 10.0) if logy else (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        return (lo / 10, hi * 10) if logy else (lo - 1, hi + 1)
    return lo, hi


def curves(
    path: str | os.PathLike,
    x: ArrayLike,
    ys: Mapping[str, ArrayLike],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
) -> str:
    """PNG at ``path`` (returned): each ys[label] against x, ±∞ drawn as ▲ / ▼ above / below the finite range.

    The markers get their own legend entry ("label = +∞"); NaN values leave gaps.

    Args: x (k,); ys: label → (k,) values.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    if len(ys) == 0:
        raise ValueError("ys must map at least one label to values, got an empty mapping")
    series = {label: np.asarray(y, dtype=np.float64) for label, y in ys.items()}
    for label, y in series.items():
        if y.shape != x.shape:
            raise ValueError(f"ys[{label!r}] has shape {y.shape}, expected x's shape {x.shape}")
    lo, hi = _y_range(list(series.values()), logy)
    if logy:
        ratio = hi / lo
        top, bottom = hi * ratio**0.12, lo / ratio**0.12
        ylim = (bottom / ratio**0.05, top * ratio**0.05)
    else:
        span = hi - lo
        top, bottom = hi + 0.12 * span, lo - 0.12 * span
        ylim = (bottom - 0.05 * span, top + 0.05 * span)
    fig = _new_figure(6, 4)
    ax = fig.add_subplot()
    for label, y in series.items():
        (line,) = ax.plot(x, np.where(np.isfinite(y), y, np.nan), label=label, marker=".")
        for sign, level, marker in ((1, top, "^"), (-1, bottom, "v")):
            mask = np.isinf(y) & (np.sign(y) == sign)
            if mask.any():
                ax.plot(
                    x[mask],
                    np.full(mask.sum(), level),
                    linestyle="none",
                    marker=marker,
                    color=line.get_color(),
                    label=f"{label} = {'+' if sign > 0 else '−'}∞",
                )
    if logy:
        ax.set_yscale("log")
    ax.set_ylim(ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
