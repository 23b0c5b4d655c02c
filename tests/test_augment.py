"""gan_jax.augment: every op against a hand-built NumPy version on the same draws (and its gradient against the
NumPy Jacobian), the draws' ranges against the papers' (DiffAugment, StyleGAN2-ADA), determinism by key and
per-example keys, ADA's gating by p, ADA's p update against its formula on a scripted sequence of signs, and
bad policies as one GanJaxError naming the valid ops."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gan_jax import augment
from gan_jax import config as config_lib
from gan_jax.errors import GanJaxError


ALL = ",".join(augment.names())  # every op once: one draw (one compilation) serves the per-op tests


def _images(n=16, side=12, channels=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, side, side, channels)).astype(np.float32))


_draw = jax.jit(augment.draw, static_argnums=(1, 2))  # one compilation per policy, shape and kind of p


@functools.lru_cache(maxsize=None)
def _draws(shape, policy=ALL, p=None, seed=3):
    """augment.draw(key(seed), shape, policy, p), as {op name: Draw} for ALL."""
    draws = _draw(jax.random.key(seed), shape, policy, p)
    return dict(zip(policy.split(","), draws)) if policy == ALL else draws


# ------------------------------------------------------------------------------------------------------------
# NumPy versions, one example at a time, written from the papers' definitions (and the reference code's
# index conventions), sharing nothing with gan_jax.augment but the drawn parameters.


def _np_color(x, q):
    x = x + q["brightness"]
    m = x.mean(axis=-1, keepdims=True)
    x = (x - m) * q["saturation"] + m
    m = x.mean()
    return (x - m) * q["contrast"] + m


def _np_move(x, dy, dx, mode):
    """out[i, j] = x[i − dy, j − dx], by padding with np.pad and slicing."""
    r = x.shape[0] // 2
    if mode == "zero":
        padded = np.pad(x, ((r, r), (r, r), (0, 0)))
    else:
        padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    return padded[r - dy:r - dy + h, r - dx:r - dx + w]


def _np_cutout(x, q):
    """The reference's construction: clamp the square's row and column indices into the image, zero them."""
    h, w = x.shape[:2]
    sh, sw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    rows = np.clip(q["cy"] - sh // 2 + np.arange(sh), 0, h - 1)
    cols = np.clip(q["cx"] - sw // 2 + np.arange(sw), 0, w - 1)
    mask = np.ones((h, w), x.dtype)
    mask[np.ix_(rows, cols)] = 0
    return x * mask[..., None]


def _luma_axis(c):
    return np.full(c, 1.0 / np.sqrt(c))


def _np_lumaflip(x, q):
    v = _luma_axis(x.shape[-1])
    householder = np.eye(x.shape[-1]) - 2.0 * q["choice"] * np.outer(v, v)
    return x @ householder.T


def _np_hue(x, q):
    if x.shape[-1] == 1:
        return x
    rotation = Rotation.from_rotvec(q["theta"] * _luma_axis(3)).as_matrix()
    return x @ rotation.T


def _np_saturation(x, q):
    v = _luma_axis(x.shape[-1])
    matrix = np.outer(v, v) + (np.eye(x.shape[-1]) - np.outer(v, v)) * q["saturation"]
    return x @ matrix.T


NUMPY_OPS = {
    "color": _np_color,
    "translation": lambda x, q: _np_move(x, q["dy"], q["dx"], "zero"),
    "cutout": _np_cutout,
    "xflip": lambda x, q: x[:, ::-1] if q["choice"] else x,
    "rotate90": lambda x, q: np.rot90(x, q["choice"], axes=(0, 1)),
    "xint": lambda x, q: _np_move(x, q["dy"], q["dx"], "reflect"),
    "brightness": lambda x, q: x + q["brightness"],
    "contrast": lambda x, q: x * q["contrast"],
    "lumaflip": _np_lumaflip,
    "hue": _np_hue,
    "saturation": _np_saturation,
}


def _np_apply(x, draws, policy):
    """The ops of `policy` one example at a time with `draws` (augment.draw), where applied."""
    out = np.array(x, np.float64)
    for name, (applied, params) in zip(policy.split(","), draws):
        for e in range(out.shape[0]):
            if applied[e]:
                out[e] = NUMPY_OPS[name](out[e], {k: np.asarray(v)[e] for k, v in params.items()})
    return out


def test_every_op_has_a_numpy_version():
    assert set(NUMPY_OPS) == set(augment.names())


@pytest.mark.parametrize("name", augment.names())
def test_each_op_equals_its_numpy_version_on_the_same_draws(name):
    x = _images(side=12)
    draw = _draws(x.shape)[name]
    out = augment.transform(x, (draw,), name)
    np.testing.assert_allclose(out, _np_apply(x, (draw,), name), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, x), "the draws moved at least one image"


def test_cutout_of_an_odd_side_is_centred_as_the_reference_code_does():
    # Side 9: a square of int(4.5 + 0.5) = 5 pixels, centres in [0, 9), clipped at the border.
    x = _images(n=9, side=9)
    centres = jnp.arange(9, dtype=jnp.int32)
    draw = augment.Draw(jnp.ones(9, bool), {"cy": centres, "cx": centres[::-1]})
    out = augment.transform(x, (draw,), "cutout")
    np.testing.assert_allclose(out, _np_apply(x, (draw,), "cutout"), rtol=1e-6)
    assert np.sum(np.all(np.asarray(out)[4] == 0, axis=-1)) == 25  # centred: the whole square inside
    assert np.sum(np.all(np.asarray(out)[0] == 0, axis=-1)) == 3 * 3  # corner: rows 0..2, columns 6..8


@pytest.mark.parametrize("name", augment.names())
def test_each_op_is_differentiable_with_the_gradient_of_its_numpy_version(name):
    # Every op is affine in the image for fixed draws, T(x) = A x + b, so ∇ₓ Σ w·T(x) = Aᵀw with the columns of
    # A = T(e_k) − T(0) built from the NumPy version.
    x = _images(n=2, side=12, seed=1)
    w = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape).astype(np.float32))
    draw = jax.tree.map(lambda a: a[:2], _draws((16, 12, 12, 3))[name])  # the first two examples' draws
    grad = jax.grad(lambda x: jnp.sum(w * augment.transform(x, (draw,), name)))(x)
    dims = int(np.prod(x.shape[1:]))
    basis = np.eye(dims).reshape(dims, *x.shape[1:])
    for e in range(x.shape[0]):
        one = lambda image: _np_apply(image[None], (jax.tree.map(lambda a: a[e:e + 1], draw),), name)[0]
        offset = one(np.zeros(x.shape[1:]))
        jacobian = np.stack([(one(b) - offset).ravel() for b in basis], axis=1)  # (out dims, in dims)
        np.testing.assert_allclose(np.asarray(grad[e]).ravel(), jacobian.T @ np.asarray(w[e]).ravel(), rtol=1e-4,
                                   atol=1e-4)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


# ------------------------------------------------------------------------------------------------------------
# The draws: the papers' ranges and laws.


def _params(name):
    return {k: np.asarray(v) for k, v in _draws((4000, 32, 32, 3), seed=11)[name].params.items()}


def test_diffaugment_draws_have_the_papers_ranges():
    color = _params("color")
    for field, (low, high) in {"brightness": (-0.5, 0.5), "saturation": (0.0, 2.0), "contrast": (0.5, 1.5)}.items():
        values = color[field]
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() < high, field
        assert abs(values.mean() - (low + high) / 2) < 0.03, field  # uniform
    # Translation by up to 1/8 of the side: integers in [−4, 4], each about 1/9 of the time.
    shifts = _params("translation")
    for axis in ("dy", "dx"):
        counts = np.bincount(shifts[axis] + 4)
        assert len(counts) == 9 and counts.min() > 4000 / 9 * 0.8, axis
    # Cutout of half the side (16, even): centres in [0, 32].
    assert set(np.unique(_params("cutout")["cy"])) == set(range(33))


def test_ada_draws_have_stylegan2_adas_laws():
    assert set(np.unique(_params("xflip")["choice"])) == {0, 1}
    assert set(np.unique(_params("rotate90")["choice"])) == {0, 1, 2, 3}
    assert set(np.unique(_params("lumaflip")["choice"])) == {0, 1}
    shifts = _params("xint")  # round(U(−0.125, 0.125)·32): −4 … 4
    assert shifts["dy"].min() == -4 and shifts["dy"].max() == 4 and shifts["dx"].min() == -4
    np.testing.assert_allclose(np.std(_params("brightness")["brightness"]), 0.2, rtol=0.05)
    np.testing.assert_allclose(np.std(np.log2(_params("contrast")["contrast"])), 0.5, rtol=0.05)
    np.testing.assert_allclose(np.std(np.log2(_params("saturation")["saturation"])), 1.0, rtol=0.05)
    theta = _params("hue")["theta"]
    assert -math.pi <= theta.min() < -math.pi + 0.01 and math.pi - 0.01 < theta.max() <= math.pi


# ------------------------------------------------------------------------------------------------------------
# Keys, p and determinism.


def test_the_draws_are_a_pure_function_of_the_key_and_of_each_examples_key():
    shape, policy, draw = (16, 12, 12, 3), ALL, _draw
    key = jax.random.key(0)
    first = jax.tree.leaves(draw(key, shape, policy))
    assert all(np.array_equal(a, b) for a, b in zip(first, jax.tree.leaves(draw(key, shape, policy))))
    other = jax.tree.leaves(draw(jax.random.key(1), shape, policy))
    assert all(not np.array_equal(a, b) for a, b in zip(first, other) if a.dtype != bool)
    # One key is split into one key per example; a batch split in two (two devices) with its examples' keys
    # draws the same numbers as the whole batch.
    keys = jax.random.split(key, shape[0])
    halves = [jax.tree.leaves(draw(keys[s], (8, *shape[1:]), policy)) for s in (slice(0, 8), slice(8, None))]
    for leaf, *parts in zip(first, *halves):
        np.testing.assert_array_equal(leaf, np.concatenate(parts))
    with pytest.raises(ValueError, match="got 3 per-example keys for a batch of 16"):
        augment.draw(keys[:3], shape, policy)


def test_p_gates_each_op_per_example_and_apply_composes_the_ops_in_order():
    x = _images(n=16)
    key = jax.random.key(4)
    apply = jax.jit(augment.apply, static_argnums=2)  # p traced, as the engine's state holds it
    np.testing.assert_array_equal(apply(key, x, ALL, 0.0), x)
    always = augment.transform(x, tuple(_draws(x.shape, seed=4).values()), ALL)
    np.testing.assert_allclose(apply(key, x, ALL, 1.0), always, rtol=1e-5, atol=1e-5)  # jitted vs eager
    # p = 0.5: each op applied to about half of the examples (16 × 11 gates: 0.5 ± 3 standard deviations), the
    # ops in the policy's order, each where its gate says, as the NumPy versions compose them.
    draws = _draws(x.shape, ALL, 0.5, seed=4)
    applied = np.stack([np.asarray(d.applied) for d in draws.values()])
    assert applied.shape == (len(augment.names()), 16) and abs(applied.mean() - 0.5) < 0.12
    assert len({row.tobytes() for row in applied}) == len(augment.names()), "independent gates per op"
    np.testing.assert_allclose(apply(key, x, ALL, 0.5), _np_apply(x, tuple(draws.values()), ALL), rtol=1e-5,
                               atol=1e-5)


def test_the_empty_policy_is_the_identity():
    x = _images(n=2)
    assert augment.apply(jax.random.key(0), x, "") is x
    assert augment.parse_policy(" , ") == ()


def test_ada_adjust_follows_the_formula_on_a_scripted_sequence_of_signs():
    # p ← clip(p + sign(r_t − target)·images/(kimg·1000), 0, 1): 64 images per interval, kimg 0.2 → steps of 0.32.
    target, images, kimg = 0.6, 64, 0.2
    signs = [0.9, 0.7, 0.6, 0.8, 0.61, 0.9, 0.2, -1.0, 0.0, 0.59, 0.3, -0.5, 1.0]
    p, expected = 0.0, []
    for r in signs:
        step = (r > target) - (r < target)
        p = min(max(p + step * images / (kimg * 1000), 0.0), 1.0)
        expected.append(p)
    got, q = [], jnp.float32(0.0)
    adjust = jax.jit(lambda q, r: augment.ada_adjust(q, r, target=target, images=images, kimg=kimg))
    for r in signs:
        q = adjust(q, jnp.float32(r))
        got.append(float(q))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert expected[2] == expected[1] and expected[4] == 1.0 and expected[9] == 0.0  # r = target; both clips


# ------------------------------------------------------------------------------------------------------------
# Bad policies.


def test_an_unknown_op_is_one_error_listing_the_valid_ones():
    with pytest.raises(GanJaxError, match=r"unknown augmentation 'colour' in policy 'colour,cutout'; valid names: "
                                          r"color, translation, cutout, xflip, rotate90, xint, brightness"):
        augment.apply(jax.random.key(0), _images(n=2), "colour,cutout")  # at trace time: nothing runs
    cfg = config_lib.base_config()
    cfg.augment.policy = "color,transl"
    with pytest.raises(GanJaxError, match=r"^config.augment.policy: unknown augmentation 'transl'.*valid names: "):
        config_lib.validate(cfg)


@pytest.mark.parametrize("policy, shape, message", [
    ("color", (2,), r"needs images \(H, W, C\); the data's examples have shape \(2,\)"),
    ("rotate90", (8, 6, 3), r"'rotate90' needs square images; got 8×6"),
    ("hue", (8, 8, 2), r"'hue' rotates RGB pixels .* 2 channels"),
])
def test_a_policy_the_images_cannot_take_is_a_clear_error(policy, shape, message):
    with pytest.raises(GanJaxError, match=message):
        augment.parse_policy(policy, shape)


@pytest.mark.parametrize("field, value, message", [
    ("ada_target", 1.5, r"config.augment.ada_target=1.5 is invalid: must be in \[0, 1\]"),
    ("ada_p", -0.1, r"config.augment.ada_p=-0.1 is invalid"),
    ("ada_interval", 0, r"config.augment.ada_interval=0 is invalid: must be an integer >= 1"),
    ("ada_kimg", 0.0, r"config.augment.ada_kimg=0.0 is invalid: must be a number > 0"),
    ("policy", "", r"config.augment.ada=True has no ops to apply: set augment.policy, e.g. 'xflip,rotate90"),
])
def test_bad_ada_settings_are_clear_errors(field, value, message):
    cfg = config_lib.base_config()
    cfg.augment.policy, cfg.augment.ada = "xflip", True
    cfg.augment[field] = value
    with pytest.raises(GanJaxError, match=message):
        config_lib.validate(cfg)
