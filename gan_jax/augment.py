"""Differentiable augmentation of image batches: DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020).

One entry, `apply(key, images, policy, p=None)`: the ops named in `policy` (comma-separated names of `OPS`,
applied in that order) transform each image of `images` (n, H, W, C), float, in the model's [−1, 1] range, with
parameters drawn per example. Every op is differentiable in the images (gather, multiply, add), so the
generator's gradient flows through the augmented fakes. The result is a pure function of the key: `key` is one
key (split into n, one per example) or n per-example keys (the engine passes per-example keys, so a batch split
over devices draws the same numbers).

    x = augment.apply(key, x, "color,translation,cutout")   # DiffAugment: every op on every image
    x = augment.apply(key, x, ADA_BC, p=0.3)                # ADA: each op on each image with probability p

`draw(key, shape, policy, p)` returns the per-example parameters that `apply` uses (`Draw`), for inspection and
tests; `apply(key, x, policy, p) == transform(x, draw(key, x.shape, policy, p), policy)`.

DiffAugment ops, with the paper's ranges and its reference code's conventions (mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py, which works on images in [−1, 1]):
- "color": brightness x + b, b ~ U(−0.5, 0.5) (added in [−1, 1] units, as the reference does); saturation
  m + s·(x − m), s ~ U(0, 2), m the per-pixel mean over channels; contrast m + c·(x − m), c ~ U(0.5, 1.5),
  m the image's mean over all pixels and channels. In this order.
- "translation": the image moved by (dy, dx), integers uniform in [−r, r] with r = int(side/8 + 0.5) per axis;
  pixels moved in are 0.
- "cutout": one square of int(side/2 + 0.5) pixels per axis set to 0, centred at (cy, cx) uniform in
  [0, side + (1 − size mod 2)) (it may reach past the border, where it is clipped).

ADA ops, the 'bc' pipeline of StyleGAN2-ADA (pixel blitting and colour; `ADA_BC`), each applied with
probability p per example, parameters with the laws of its augment.py (not its integer-free geometric ops):
- "xflip": mirror left-right with probability ½; "rotate90": rotation by k·90°, k uniform in {0, 1, 2, 3}
  (square images); "xint": move by (round(t_y·H), round(t_x·W)), t ~ U(−0.125, 0.125)², reflected at the
  border (PyTorch's "reflect" padding: the edge pixel is not repeated).
- "brightness": x + b, b ~ N(0, 0.2²); "contrast": c·x, c = 2^N(0, 0.5²) (about 0, mid-grey);
  "lumaflip": x − 2i·m, i uniform in {0, 1}, m the per-pixel channel mean (Householder reflection about the
  luma axis (1, …, 1)/√C); "hue": rotation of each RGB pixel by θ ~ U(−π, π) about the luma axis (identity on
  one channel, as ADA); "saturation": m + s·(x − m), s = 2^N(0, 1).
With `p`, each op of the policy (DiffAugment's too) is applied to each example independently with probability
p; without, always. ADA adjusts p during training from the sign of the critic on reals (`ada_adjust`).

Every parameter is made from uniform numbers, one draw of (ops × (1 + UNIFORMS)) per example (gate, then the
op's numbers; integers by flooring, normals by Φ⁻¹): the same laws as separate random calls per parameter, and one
random-number generator to compile instead of one per parameter.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

Params = dict[str, jax.Array]  # one example's parameters of one op


class Op(NamedTuple):
    """An augmentation: `draw(u, (H, W, C))` → one example's parameters from UNIFORMS numbers u ~ U[0, 1);
    `transform(image, params)` → image."""

    draw: Callable[[jax.Array, tuple[int, int, int]], Params]
    transform: Callable[[jax.Array, Params], jax.Array]


UNIFORMS = 3  # uniform numbers each op's parameters are made from (color needs three)


class Draw(NamedTuple):
    """One op's draws for a batch: whether it is applied to each example (n,), and its parameters (leading n)."""

    applied: jax.Array
    params: Params


# ------------------------------------------------------------------------------------------------------------
# Pixel moves shared by the ops.


def _source_index(n: int, shift: jax.Array, fill: str) -> tuple[jax.Array, jax.Array]:
    """Source index i − shift of each output index i < n, and whether it lies inside (always, for "reflect")."""
    index = jnp.arange(n) - shift
    if fill == "reflect":  # …, 2, 1, | 0, 1, …, n−1, | n−2, … (period 2(n−1))
        period = 2 * (n - 1)
        index = index % period
        return jnp.where(index < n, index, period - index), jnp.ones((n,), bool)
    return jnp.clip(index, 0, n - 1), (index >= 0) & (index < n)


def _shift(image: jax.Array, dy: jax.Array, dx: jax.Array, fill: str) -> jax.Array:
    """out[i, j] = image[i − dy, j − dx]; outside the image: 0 ("zero") or the mirrored pixel ("reflect")."""
    height, width = image.shape[:2]
    rows, row_inside = _source_index(height, dy, fill)
    cols, col_inside = _source_index(width, dx, fill)
    moved = jnp.take(jnp.take(image, rows, axis=0), cols, axis=1)
    return moved * (row_inside[:, None] & col_inside[None, :])[..., None].astype(image.dtype)


def _channel_mean(image: jax.Array) -> jax.Array:
    """m = per-pixel mean over channels (H, W, 1): the projection on the luma axis (1, …, 1)/√C."""
    return jnp.mean(image, axis=-1, keepdims=True)


def _half_up(side: int, ratio: float) -> int:
    """int(side·ratio + 0.5), the reference's rounding of the translation range and the cutout size."""
    return int(side * ratio + 0.5)


# Parameters from uniform numbers u ∈ [0, 1): one random draw per example serves all its ops (a random-number
# call per parameter would compile into one generator each, many times slower to compile).


def _integer(u: jax.Array, low: int, high: int) -> jax.Array:
    """An integer uniform in [low, high]: low + ⌊u·(high − low + 1)⌋ (clipped: u·m may round up to m)."""
    return low + jnp.minimum(jnp.floor(u * (high - low + 1)).astype(jnp.int32), high - low)


def _normal(u: jax.Array) -> jax.Array:
    """A standard normal Φ⁻¹(u'), u' = u + 2⁻²⁴ ∈ (0, 1) (float32 uniforms are multiples of 2⁻²³)."""
    return jax.scipy.special.ndtri(u + 2.0**-24)


# ------------------------------------------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020).


def _draw_color(u: jax.Array, shape: tuple[int, int, int]) -> Params:
    return dict(brightness=u[0] - 0.5, saturation=u[1] * 2.0, contrast=u[2] + 0.5)


def _color(image: jax.Array, params: Params) -> jax.Array:
    """x + b, then m_c + s·(x − m_c) (channel mean m_c), then m + c·(x − m) (image mean m)."""
    image = image + params["brightness"]
    mean = _channel_mean(image)
    image = (image - mean) * params["saturation"] + mean
    mean = jnp.mean(image)
    return (image - mean) * params["contrast"] + mean


def _draw_translation(u: jax.Array, shape: tuple[int, int, int]) -> Params:
    ry, rx = _half_up(shape[0], 1 / 8), _half_up(shape[1], 1 / 8)
    return dict(dy=_integer(u[0], -ry, ry), dx=_integer(u[1], -rx, rx))


def _translation(image: jax.Array, params: Params) -> jax.Array:
    """out[i, j] = x[i − dy, j − dx], 0 outside."""
    return _shift(image, params["dy"], params["dx"], "zero")


def _draw_cutout(u: jax.Array, shape: tuple[int, int, int]) -> Params:
    sy, sx = _half_up(shape[0], 1 / 2), _half_up(shape[1], 1 / 2)
    return dict(cy=_integer(u[0], 0, shape[0] - sy % 2), cx=_integer(u[1], 0, shape[1] - sx % 2))


def _cutout(image: jax.Array, params: Params) -> jax.Array:
    """x with the square of rows cy − ⌊s/2⌋ … cy − ⌊s/2⌋ + s − 1 and the same columns about cx set to 0."""
    height, width = image.shape[:2]

    def inside(n: int, centre: jax.Array) -> jax.Array:
        size = _half_up(n, 1 / 2)
        start = centre - size // 2
        index = jnp.arange(n)
        return (index >= start) & (index < start + size)

    hole = inside(height, params["cy"])[:, None] & inside(width, params["cx"])[None, :]
    return image * (~hole)[..., None].astype(image.dtype)


# ------------------------------------------------------------------------------------------------------------
# ADA (Karras et al. 2020): pixel blitting and colour transforms of StyleGAN2-ADA's 'bc' pipeline.


def _draw_choice(count: int) -> Callable[[jax.Array, tuple[int, int, int]], Params]:
    return lambda u, shape: dict(choice=_integer(u[0], 0, count - 1))


def _xflip(image: jax.Array, params: Params) -> jax.Array:
    """x[:, ::−1] when choice = 1."""
    return jnp.where(params["choice"] == 1, image[:, ::-1], image)


def _rotate90(image: jax.Array, params: Params) -> jax.Array:
    """x rotated by choice·90° counter-clockwise."""
    return jax.lax.switch(params["choice"], [lambda x, k=k: jnp.rot90(x, k, axes=(0, 1)) for k in range(4)], image)


def _draw_xint(u: jax.Array, shape: tuple[int, int, int]) -> Params:
    t = (u[:2] * 2.0 - 1.0) * 0.125
    return dict(dy=jnp.round(t[1] * shape[0]).astype(jnp.int32), dx=jnp.round(t[0] * shape[1]).astype(jnp.int32))


def _xint(image: jax.Array, params: Params) -> jax.Array:
    """out[i, j] = x[i − dy, j − dx], mirrored at the border."""
    return _shift(image, params["dy"], params["dx"], "reflect")


def _draw_normal(name: str, std: float, log2: bool = False) -> Callable[[jax.Array, tuple[int, int, int]], Params]:
    """{name: std·N(0, 1)}, or 2^(std·N(0, 1)) with log2."""

    def draw(u: jax.Array, shape: tuple[int, int, int]) -> Params:
        value = _normal(u[0]) * std
        return {name: jnp.exp2(value) if log2 else value}

    return draw


def _lumaflip(image: jax.Array, params: Params) -> jax.Array:
    """x − 2i·m_c: (I − 2vvᵀ)x for i = 1, v = (1, …, 1)/√C."""
    return image - 2.0 * params["choice"].astype(image.dtype) * _channel_mean(image)


def _draw_hue(u: jax.Array, shape: tuple[int, int, int]) -> Params:
    return dict(theta=(u[0] * 2.0 - 1.0) * math.pi)


def _hue(image: jax.Array, params: Params) -> jax.Array:
    """R x per RGB pixel, R = cos θ·I + sin θ·[v]ₓ + (1 − cos θ)·vvᵀ (Rodrigues, v = (1, 1, 1)/√3)."""
    if image.shape[-1] == 1:
        return image
    c = 1.0 / math.sqrt(3.0)
    cross = jnp.array([[0.0, -c, c], [c, 0.0, -c], [-c, c, 0.0]], image.dtype)  # [v]ₓ y = v × y
    cos, sin = jnp.cos(params["theta"]), jnp.sin(params["theta"])
    rotation = cos * jnp.eye(3, dtype=image.dtype) + sin * cross + (1.0 - cos) * jnp.full((3, 3), c * c, image.dtype)
    return image @ rotation.T


def _saturation(image: jax.Array, params: Params) -> jax.Array:
    """m_c + s·(x − m_c)."""
    mean = _channel_mean(image)
    return mean + params["saturation"] * (image - mean)


OPS: Registry[Op] = Registry("augmentation", {
    # DiffAugment.
    "color": Op(_draw_color, _color),
    "translation": Op(_draw_translation, _translation),
    "cutout": Op(_draw_cutout, _cutout),
    # ADA: pixel blitting.
    "xflip": Op(_draw_choice(2), _xflip),
    "rotate90": Op(_draw_choice(4), _rotate90),
    "xint": Op(_draw_xint, _xint),
    # ADA: colour.
    "brightness": Op(_draw_normal("brightness", 0.2), lambda x, q: x + q["brightness"]),
    "contrast": Op(_draw_normal("contrast", 0.5, log2=True), lambda x, q: x * q["contrast"]),
    "lumaflip": Op(_draw_choice(2), _lumaflip),
    "hue": Op(_draw_hue, _hue),
    "saturation": Op(_draw_normal("saturation", 1.0, log2=True), _saturation),
})
names = OPS.names  # names() -> the op names, in the order above

DIFFAUGMENT = "color,translation,cutout"  # the DiffAugment paper's policy for its CIFAR-10 and few-shot runs
ADA_BC = "xflip,rotate90,xint,brightness,contrast,lumaflip,hue,saturation"  # StyleGAN2-ADA's 'bc' pipeline


def parse_policy(policy: str, image_shape: tuple[int, ...] | None = None) -> tuple[str, ...]:
    """The op names of `policy` ("" = none), checked; GanJaxError on an unknown name, or an image shape
    (H, W, C) that an op cannot take (no image; a non-square image for rotate90; hue on other than 1 or 3 channels)."""
    if not isinstance(policy, str):
        raise GanJaxError(f"augmentation policy {policy!r} is invalid: a string of comma-separated names of "
                          f"{', '.join(OPS)} (\"\" = none)")
    ops = tuple(name.strip() for name in policy.split(",") if name.strip())
    for name in ops:
        if name not in OPS:
            raise GanJaxError(f"unknown augmentation {name!r} in policy {policy!r}; valid names: {', '.join(OPS)}")
    if ops and image_shape is not None:
        if len(image_shape) != 3:
            raise GanJaxError(f"augmentation policy {policy!r} needs images (H, W, C); the data's examples have "
                              f"shape {tuple(image_shape)}. Augment image data only (set the policy to \"\")")
        if "rotate90" in ops and image_shape[0] != image_shape[1]:
            raise GanJaxError(f"augmentation 'rotate90' needs square images; got {image_shape[0]}×{image_shape[1]}")
        if "hue" in ops and image_shape[2] not in (1, 3):
            raise GanJaxError(f"augmentation 'hue' rotates RGB pixels (or leaves one channel unchanged); the images "
                              f"have {image_shape[2]} channels")
    return ops


def _example_keys(key: jax.Array, n: int) -> jax.Array:
    """n per-example keys: `key` itself when it is already n keys, else split(key, n)."""
    if jnp.ndim(key) == 1 and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape[0] != n:
            raise ValueError(f"got {key.shape[0]} per-example keys for a batch of {n}; pass one key or n keys")
        return key
    return jax.random.split(key, n)


def _check_images(shape: tuple[int, ...]) -> None:
    if len(shape) != 4:
        raise ValueError(f"augmentation expects images of shape (n, H, W, C), got shape {tuple(shape)}")


def draw(key: jax.Array, shape: tuple[int, ...], policy: str, p: Any = None) -> tuple[Draw, ...]:
    """Per-example draws of the ops of `policy` for images of `shape` (n, H, W, C): example e draws
    u ~ U[0, 1)^(ops × (1 + UNIFORMS)) from its key; op i is applied iff u[i, 0] < p (always without p), with
    the parameters op.draw(u[i, 1:])."""
    _check_images(shape)
    ops = [OPS[name] for name in parse_policy(policy, tuple(shape[1:]))]

    def one_example(example_key: jax.Array) -> tuple[Draw, ...]:
        u = jax.random.uniform(example_key, (len(ops), 1 + UNIFORMS))
        return tuple(Draw(jnp.asarray(True) if p is None else u[i, 0] < p, op.draw(u[i, 1:], tuple(shape[1:])))
                     for i, op in enumerate(ops))

    return jax.vmap(one_example)(_example_keys(key, shape[0]))


def transform(images: jax.Array, draws: tuple[Draw, ...], policy: str) -> jax.Array:
    """The ops of `policy` applied in order with `draws`: x ← where(applied, op(x, params), x) per example."""
    _check_images(images.shape)
    for name, (applied, params) in zip(parse_policy(policy, images.shape[1:]), draws, strict=True):
        moved = jax.vmap(OPS[name].transform)(images, params)
        images = jnp.where(applied[:, None, None, None], moved, images)
    return images


def apply(key: jax.Array, images: jax.Array, policy: str, p: Any = None) -> jax.Array:
    """T(x): `images` (n, H, W, C) augmented by the ops of `policy`, each example with its own draws; with `p`,
    each op applied to each example with probability p (ADA). The identity for policy ""."""
    if not parse_policy(policy):
        return images
    return transform(images, draw(key, images.shape, policy, p), policy)


def ada_adjust(p: jax.Array, real_sign: jax.Array, *, target: float, images: int, kimg: float) -> jax.Array:
    """p' = clip(p + sign(r_t − target)·images/(kimg·1000), 0, 1), r_t = E[sign(D(x_real))] over the last interval.

    Karras et al. 2020 (StyleGAN2-ADA's training loop: target 0.6, `images` = the real images the critic saw in
    the interval, `kimg` = 500: p can move from 0 to 1 in 500k images). StyleGAN2-ADA clips only at 0 (a p above 1
    acts as 1); clipping at 1 too keeps p a probability and changes nothing while p ≤ 1.
    """
    p = jnp.asarray(p, jnp.float32)
    step = jnp.sign(real_sign - target) * (images / (kimg * 1000.0))
    return jnp.clip(p + step.astype(p.dtype), 0.0, 1.0)
