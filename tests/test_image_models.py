"""Tests for the image-scale networks of gan_jax.models (dcgan, resnet, biggan) and their shared layers.

References: exact parameter counts of the reference implementations (Mimicry's SNGAN/cGAN-PD nets, StudioGAN's
big_resnet, PyTorch's DCGAN example), NumPy re-computations (spectral norm's power iteration, conditional batch
norm, self-attention, residual blocks), and PyTorch's DCGAN layers on the same weights.

Variables are NumPy draws of the shapes ``jax.eval_shape(module.init, ...)`` reports and every forward pass is one
jitted call: on CPU each eager op and each parameter shape costs an XLA compile.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import numpy.testing as npt
import pytest

from gan_jax import models
from gan_jax.errors import GanJaxError
from gan_jax.models import biggan, convolution, dcgan, layers, resnet

KEY = jax.random.key(0)


def _shape(module, *inputs):
    """The variables' shapes of module.init(KEY, *inputs) (inputs: ShapeDtypeStructs or arrays)."""
    return jax.eval_shape(functools.partial(module.init, train=False), KEY, *inputs)


def _spec(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def n_params(module, *inputs) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(_shape(module, *inputs)["params"]))


def random_variables(module, *inputs, seed: int = 0):
    """Kernels ~ N(0, 1/fan_in), other params ~ 0.1·N(0, 1) (+1 for BN scale), u ~ N(0, 1), BN at flax's init."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if path[0].key == "params":
            if leaf.ndim >= 2:
                return rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
            return (name == "['scale']") + 0.1 * rng.standard_normal(leaf.shape)
        if name.endswith("/u']"):
            return rng.standard_normal(leaf.shape)
        return np.ones(leaf.shape) if name.endswith(("var']", "sigma']")) else np.zeros(leaf.shape)

    drawn = jax.tree_util.tree_map_with_path(draw, _shape(module, *inputs))
    return jax.tree.map(lambda v, s: jnp.asarray(v, s.dtype), drawn, _shape(module, *inputs))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(module, train, variables, *args):
    return module.apply(variables, *args, train=train, mutable=["batch_stats"])


def apply(module, variables, *args, train=True):
    """(output, updated collections) of one jitted call."""
    return _apply(module, train, variables, *args)


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# NumPy references.


def np_conv(x, w):
    """Stride-1 'SAME' convolution (cross-correlation) of x (n, H, W, C) with an odd kernel w (k, k, C, O)."""
    k = w.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    n, h, wd, _ = x.shape
    return sum(np.einsum("nhwc,co->nhwo", xp[:, a:a + h, b:b + wd], w[a, b]) for a in range(k) for b in range(k))


def np_l2n(x, eps=1e-12):
    return x / np.sqrt((x * x).sum() + eps)


def np_power_step(kernel, u):
    """One power-iteration step on W = kernel reshaped (∏shape[:-1], c_out) from u (1, c_out): (σ, u', W/σ)."""
    m = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    v = np_l2n(u @ m.T)
    u_new = np_l2n(v @ m)
    sigma = float((v @ m @ u_new.T)[0, 0])
    return sigma, u_new, kernel / sigma


def np_batch_norm(x, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    return (x - x.mean(axes)) / np.sqrt(x.var(axes) + eps)


def np_up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_avg_pool(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean((2, 4))


def relu(x):
    return np.maximum(x, 0)


def tree(variables):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables)


# ---------------------------------------------------------------------------------------------------------
# Exact parameter counts against the reference implementations (trainable parameters only on both sides: the
# spectral-norm vectors are buffers there and "batch_stats" here).
#
# Mimicry 0.1.16 (pip install --no-deps torch-mimicry==0.1.16; its package imported without its training/metrics
# extras): sum(p.numel() for p in net.parameters()) of torch_mimicry.nets.sngan.SNGANGenerator32() etc. (nz 128,
# default widths), and of cgan_pd.CGANPDGenerator32(num_classes=10) / CGANPDDiscriminator32(num_classes=10).
MIMICRY = {
    32: (4_276_739, 1_053_825),
    48: (4_878_083, 10_141_441),
    64: (12_220_675, 10_141_441),
    128: (32_150_787, 29_017_857),
}
MIMICRY_CGAN_PD_32 = (4_304_387, 1_055_105)
# StudioGAN (POSTECH-CVLab/PyTorch-StudioGAN, src/models/big_resnet.py at its newest commit, modules as its
# config.py builds them with apply_g_sn = apply_d_sn = True, g_cond_mtd "cBN", d_cond_mtd "PD"): Generator /
# Discriminator(img_size, z_dim, g_shared_dim=128, g/d_conv_dim=96, attention after G's block size/8·… as below,
# num_classes=10), parameter count as above. (size, z_dim, attention side, classes) -> (G, D).
STUDIOGAN = {
    (32, 80, 16, 10): (9_416_196, 2_415_170),  # CIFAR-10 BigGAN.yaml: attn_g_loc [2], attn_d_loc [1]
    (32, 80, 0, 10): (9_231_875, 2_369_089),  # apply_attn False
    (32, 80, 16, 0): (8_825_092, 2_413_250),  # unconditional (g_cond_mtd "W/O": the cBN takes the z chunk alone)
    (64, 80, 32, 10): (24_433_860, 43_991_330),  # attn_g_loc [3], attn_d_loc [1]
    (128, 120, 64, 10): (70_307_268, 86_461_730),  # attn_g_loc [4], attn_d_loc [1]
}
# pytorch/examples dcgan/main.py (nz 100, ngf = ndf = 64, nc 3): netG and netD.
PYTORCH_DCGAN_64 = (3_576_704, 2_765_568)


@pytest.mark.parametrize("size", sorted(MIMICRY))
def test_resnet_parameter_counts_equal_mimicry_sngan(size):
    gen, critic = resnet.ResNetGenerator(size), resnet.ResNetCritic(size)
    assert (n_params(gen, _spec(2, 128)), n_params(critic, _spec(2, size, size, 3))) == MIMICRY[size]


def test_conditional_resnet_parameter_counts_equal_mimicry_cgan_pd():
    labels = _spec(2, dtype=jnp.int32)
    gen = resnet.ResNetGenerator(32, num_classes=10)
    critic = resnet.ResNetCritic(32, num_classes=10)
    assert (n_params(gen, _spec(2, 128), labels), n_params(critic, _spec(2, 32, 32, 3), labels)) == MIMICRY_CGAN_PD_32


@pytest.mark.parametrize("size, latent, attention, classes", sorted(STUDIOGAN))
def test_biggan_parameter_counts_equal_studiogan(size, latent, attention, classes):
    gen = biggan.BigGANGenerator(size, num_classes=classes, attention_resolution=attention)
    critic = biggan.BigGANCritic(size, num_classes=classes, attention_resolution=attention)
    labels = (_spec(2, dtype=jnp.int32),) if classes else ()
    counts = (n_params(gen, _spec(2, latent), *labels), n_params(critic, _spec(2, size, size, 3), *labels))
    assert counts == STUDIOGAN[size, latent, attention, classes]


def test_dcgan_parameter_counts_equal_pytorch_example_and_hand_count_at_32():
    assert (n_params(dcgan.DCGANGenerator(64), _spec(2, 100)),
            n_params(dcgan.DCGANCritic(64, batch_norm=True), _spec(2, 64, 64, 3))) == PYTORCH_DCGAN_64
    # 32×32: z → 4×4×256, convT 256→128→64→3; critic 3→64→128→256, BN (γ, β) on the last two, 4·4·256 → 1.
    gen32 = 100 * 16 * 256 + 2 * 256 + 16 * 256 * 128 + 2 * 128 + 16 * 128 * 64 + 2 * 64 + 16 * 64 * 3
    critic32 = 16 * 3 * 64 + 16 * 64 * 128 + 2 * 128 + 16 * 128 * 256 + 2 * 256 + 16 * 256
    assert n_params(dcgan.DCGANGenerator(32), _spec(2, 100)) == gen32
    assert n_params(dcgan.DCGANCritic(32, batch_norm=True), _spec(2, 32, 32, 3)) == critic32


@pytest.mark.parametrize("make, sizes", [
    (lambda s: dcgan.DCGANGenerator(s), (32, 64)),
    (lambda s: resnet.ResNetGenerator(s, ch=2), (32, 48, 64, 128)),
    (lambda s: biggan.BigGANGenerator(s, ch=2, num_classes=3), (32, 64, 128)),
])
def test_generators_make_images_of_every_supported_size(make, sizes):
    for size in sizes:
        gen = make(size)
        labels = (_spec(2, dtype=jnp.int32),) if gen.num_classes else ()
        latent = 120 if size == 128 else 80
        images = jax.eval_shape(lambda v, *a: gen.apply(v, *a), _shape(gen, _spec(2, latent), *labels),
                                _spec(2, latent), *labels)
        assert images.shape == (2, size, size, 3) and images.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------------
# Spectral norm: flax's power iteration with persistent u, on the networks' layers.


def test_spectral_norm_matches_numpy_power_iteration_on_conv_dense_and_embedding():
    critic = resnet.ResNetCritic(32, ch=1, num_classes=3)  # 2 channels per block at ch = 1
    x, y = normal(1, 2, 32, 32, 3), np.array([0, 2], np.int32)
    variables = random_variables(critic, x, y)
    _, updates = apply(critic, variables, x, y, train=True)
    params, before, after = tree(variables["params"]), tree(variables["batch_stats"]), tree(updates["batch_stats"])
    checked = [
        (params["block_0"]["conv_1"]["kernel"], before["block_0"]["conv_1_sn"], after["block_0"]["conv_1_sn"],
         "conv_1/kernel"),  # (3, 3, 3, 2) flattened to (27, 2)
        (params["block_1"]["shortcut"]["kernel"], before["block_1"]["shortcut_sn"], after["block_1"]["shortcut_sn"],
         "shortcut/kernel"),
        (params["logit"]["kernel"], before["logit_sn"], after["logit_sn"], "logit/kernel"),
        (params["projection"]["embedding"], before["projection_sn"], after["projection_sn"], "projection/embedding"),
    ]
    for kernel, old, new, name in checked:
        sigma, u, _ = np_power_step(kernel, old[f"{name}/u"])
        npt.assert_allclose(new[f"{name}/u"], u, rtol=1e-5, atol=1e-6, err_msg=name)
        npt.assert_allclose(new[f"{name}/sigma"], sigma, rtol=1e-5, err_msg=name)
    # A read-only call leaves u and σ as they were.
    _, frozen = apply(critic, variables, x, y, train=False)
    jax.tree.map(npt.assert_array_equal, tree(frozen["batch_stats"]), before)


class _OneConv(nn.Module):
    """One 3×3 convolution made by layers.Layers, spectrally normalised."""

    @nn.compact
    def __call__(self, x, train=True):
        return layers.Layers(jnp.float32, True, layers.WEIGHT_INITS["xavier"], train).conv(x, 4, 3, "conv")


def test_spectral_norm_conv_uses_the_kernel_divided_by_numpy_sigma():
    module = _OneConv()
    x = normal(2, 2, 5, 5, 3)
    variables = random_variables(module, x)
    out, updates = apply(module, variables, x, train=True)
    p = tree(variables["params"])["conv"]
    sigma, _, normalised = np_power_step(p["kernel"], tree(variables["batch_stats"])["conv_sn"]["conv/kernel/u"])
    npt.assert_allclose(out, np_conv(x, normalised) + p["bias"], rtol=1e-4, atol=1e-5)
    npt.assert_allclose(updates["batch_stats"]["conv_sn"]["conv/kernel/sigma"], sigma, rtol=1e-5)
    # Many training calls converge σ to the largest singular value of the (27, 4) matrix.
    step = jax.jit(lambda v: {**v, **module.apply(v, x, train=True, mutable=["batch_stats"])[1]})
    for _ in range(30):
        variables = step(variables)
    top = np.linalg.svd(p["kernel"].reshape(27, 4), compute_uv=False)[0]
    npt.assert_allclose(variables["batch_stats"]["conv_sn"]["conv/kernel/sigma"], top, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The convolution with the kernel gradient as matrix products (convolution.conv_general_dilated), and the transposed
# convolution (input dilation) as phase convolutions of the undilated input.

NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_and_layers_conv(strides, padding, dilation):
    """(plain lax, gan_jax's layers) convolution functions of (x, w)."""
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dilation,  # noqa: E731
                                                    dimension_numbers=NHWC)
    new = lambda x, w: convolution.conv_general_dilated(x, w, strides, padding, dilation, None, NHWC)  # noqa: E731
    return ref, new


def _values_and_gradients(conv, x, w):
    """conv(x, w), and ∂/∂x, ∂/∂w of Σ sin(conv(x, w)), jitted."""
    return jax.jit(conv)(x, w), *jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), (0, 1)))(x, w)


@pytest.mark.parametrize("kernel, strides, padding", [
    ((3, 3, 3, 5), (1, 1), "SAME"),  # the residual blocks' 3×3
    ((1, 1, 3, 5), (1, 1), "SAME"),  # shortcuts, attention
    ((4, 4, 3, 5), (2, 2), ((1, 1), (1, 1))),  # DCGAN's critic
    ((4, 4, 3, 48), (2, 2), ((1, 1), (1, 1))),  # its first layer: kh·kw·c_in ≤ c_out, the patches in one product
    ((3, 3, 3, 27), (1, 1), "SAME"),  # the same at stride 1
])
def test_conv_values_and_gradients_equal_lax(kernel, strides, padding):
    x, w = normal(20, 2, 8, 8, 3), normal(21, *kernel)
    ref, new = _lax_and_layers_conv(strides, padding, (1, 1))
    npt.assert_array_equal(jax.jit(new)(x, w), jax.jit(ref)(x, w))
    for got, want in zip(_values_and_gradients(new, x, w)[1:], _values_and_gradients(ref, x, w)[1:]):
        npt.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("image, kernel, dilation, padding", [
    ((2, 8, 8, 3), (4, 4, 3, 5), (2, 2), ((2, 2), (2, 2))),  # DCGAN's generator (PyTorch's 4×4, stride 2, pad 1)
    ((2, 5, 4, 1), (3, 3, 1, 4), (2, 2), ((1, 1), (1, 1))),  # odd kernel: 2N − 1 outputs, not a multiple of s
    ((1, 5, 6, 6), (3, 3, 6, 2), (2, 2), ((1, 2), (2, 1))),  # odd kernel, uneven padding, 2N outputs
    ((2, 4, 5, 3), (5, 5, 3, 4), (3, 3), ((2, 3), (4, 1))),  # s = 3, uneven padding
    ((1, 5, 6, 2), (4, 3, 2, 3), (2, 3), ((0, 3), (-1, 2))),  # s differing by axis, a cropping (negative) pad
    ((2, 3, 3, 2), (2, 2, 2, 3), (3, 3), ((1, 1), (1, 1))),  # s > K: phases that meet no kernel tap
    ((2, 4, 4, 48), (4, 4, 48, 3), (2, 2), ((2, 2), (2, 2))),  # DCGAN's last layer: kh·kw·c_out ≤ c_in, products
    ((2, 5, 4, 20), (3, 3, 20, 2), (2, 2), ((1, 2), (2, 1))),  # products, odd kernel, uneven padding
    ((1, 4, 5, 30), (5, 3, 30, 2), (3, 2), ((2, 3), (-1, 4))),  # products, s = 3 and 2, a cropping pad
    ((2, 3, 3, 12), (2, 2, 12, 3), (3, 3), ((1, 1), (1, 1))),  # products, s > K
])
def test_transposed_conv_by_phases_equals_lax_with_input_dilation(image, kernel, dilation, padding):
    x, w = normal(22, *image), normal(23, *kernel)
    ref, new = _lax_and_layers_conv((1, 1), padding, dilation)
    got, want = _values_and_gradients(new, x, w), _values_and_gradients(ref, x, w)
    assert got[0].shape == want[0].shape
    for g, r in zip(got, want):  # output, input gradient, kernel gradient
        npt.assert_allclose(g, r, rtol=1e-5, atol=2e-5)


def test_transposed_conv_products_round_once_in_bfloat16():
    """With few output channels in bfloat16, the taps' products are summed in float32 and rounded once: the result is
    the float32 convolution of the same values rounded to bfloat16, within one unit in the last place."""
    x = normal(31, 4, 8, 8, 64).astype(jnp.bfloat16)
    w = (0.1 * normal(32, 4, 4, 64, 3)).astype(jnp.bfloat16)  # kh·kw·c_out = 48 ≤ 64: the products path
    padding, dilation = ((2, 2), (2, 2)), (2, 2)
    got = jax.jit(_lax_and_layers_conv((1, 1), padding, dilation)[1])(x, w)
    want = jax.lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), (1, 1), padding, dilation,
                                        dimension_numbers=NHWC).astype(jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.all(np.abs(got - want) <= 2.0**-7 * np.abs(want)), np.max(np.abs(got - want))


@pytest.mark.parametrize("image, kernel, strides, padding, dilation", [
    ((2, 8, 8, 3), (4, 4, 3, 5), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # DCGAN's critic (4×4, stride 2, pad 1)
    ((2, 9, 7, 3), (4, 4, 3, 5), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # odd sizes: the last row/column unused
    ((2, 7, 8, 2), (3, 3, 2, 4), (2, 2), "SAME", (1, 1)),  # 3×3 SAME, stride 2, odd and even sides
    ((2, 7, 7, 3), (3, 3, 3, 4), (1, 1), "SAME", (1, 1)),  # stride 1: one convolution, no phases
    ((1, 10, 11, 2), (5, 3, 2, 3), (3, 2), ((2, 0), (1, 3)), (1, 1)),  # strides differing by axis, uneven padding
    ((1, 10, 10, 2), (3, 3, 2, 3), (2, 2), "VALID", (1, 1)),
    ((1, 5, 6, 2), (4, 4, 2, 3), (2, 2), ((1, 2), (0, 1)), (2, 2)),  # stride and input dilation together
    ((2, 8, 8, 3), (4, 4, 3, 48), (2, 2), ((1, 1), (1, 1)), (1, 1)),  # DCGAN's first critic layer: dx by products
])
def test_conv_input_gradient_equals_vjp_of_lax(image, kernel, strides, padding, dilation):
    """convolution._input_gradient (on CPU by phases) = the VJP of lax's convolution w.r.t. its input, jitted; and the
    gradients of convolution.conv_general_dilated w.r.t. both inputs equal lax's."""
    x, w = normal(26, *image), normal(27, *kernel)
    ref, new = _lax_and_layers_conv(strides, padding, dilation)
    y, vjp = jax.vjp(lambda v: ref(v, w), x)
    g = normal(28, *y.shape)
    pads = padding
    if isinstance(padding, str):
        dilated = [(n - 1) * d + 1 for n, d in zip(image[1:3], dilation)]
        pads = jax.lax.padtype_to_pads(dilated, kernel[:2], strides, padding)
    dx = jax.jit(convolution._input_gradient, static_argnums=(2, 3, 4, 5))(g, w, image, strides, tuple(pads), dilation)
    npt.assert_allclose(dx, vjp(g)[0], rtol=1e-5, atol=2e-5)
    for got, want in zip(_values_and_gradients(new, x, w), _values_and_gradients(ref, x, w)):
        npt.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_strided_conv_gradient_penalty_equals_lax():
    """∂/∂w of ‖∂f/∂x‖² (a gradient penalty: the input gradient differentiated again) through DCGAN's strided conv."""
    x, w = normal(29, 2, 8, 8, 3), normal(30, 4, 4, 3, 5)

    def penalty_gradient(conv):
        penalty = lambda w: jnp.sum(jax.grad(lambda v: jnp.sum(jnp.sin(conv(v, w))))(x) ** 2)  # noqa: E731
        return jax.jit(jax.grad(penalty))(w)

    ref, new = _lax_and_layers_conv((2, 2), ((1, 1), (1, 1)), (1, 1))
    npt.assert_allclose(penalty_gradient(new), penalty_gradient(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides, padding, dilation", [
    ((2, 2), ((1, 1), (1, 1)), (1, 1)),  # the critic's strided layer: its input gradient by phases of g
    ((1, 1), ((2, 2), (2, 2)), (2, 2)),  # the generator's transposed layer: by phases of the undilated input
])
def test_dcgan_layers_on_cpu_convolve_no_dilated_operand(strides, padding, dilation):
    """On CPU the forward and both gradients of DCGAN's layers compile to convolutions and products of undilated
    operands: no convolution with lhs_dilate (a dilated operand's zeros) is left."""
    if jax.default_backend() != "cpu":
        pytest.skip("the phase convolutions are the CPU path")
    x, w = normal(24, 2, 8, 8, 3), normal(25, 4, 4, 3, 5)
    _, new = _lax_and_layers_conv(strides, padding, dilation)
    step = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(new(x, w))), (0, 1)))
    hlo = step.lower(x, w).compile().as_text()
    assert "convolution(" in hlo and "lhs_dilate" not in hlo


# ---------------------------------------------------------------------------------------------------------
# Conditional batch norm, self-attention, residual blocks against NumPy.


def test_conditional_batch_norm_is_per_class_gain_and_bias_on_whole_batch_statistics():
    norm = layers.ConditionalBatchNorm()
    x, y = normal(3, 6, 2, 2, 4), np.array([0, 1, 2, 1, 0, 2])
    onehot = np.eye(3, dtype=np.float32)[y]
    variables = random_variables(norm, x, onehot)
    out, updates = apply(norm, variables, x, onehot, train=True)
    p = tree(variables["params"])
    gain, bias = p["gain"]["kernel"], p["bias"]["kernel"]  # (classes, channels): one row per class
    # By hand, class by class: the batch's statistics (all classes together), then class c's gain and bias.
    normalised = np_batch_norm(x.astype(np.float64))
    for c in range(3):
        rows = y == c
        npt.assert_allclose(out[rows], normalised[rows] * (1 + gain[c]) + bias[c], rtol=1e-4, atol=1e-5)
    stats = updates["batch_stats"]["norm"]  # running ← 0.9·running + 0.1·batch (PyTorch's momentum 0.1)
    npt.assert_allclose(stats["mean"], 0.1 * x.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    npt.assert_allclose(stats["var"], 0.9 + 0.1 * x.var((0, 1, 2)), rtol=1e-4)
    # Evaluation uses the running statistics: an example's output no longer depends on the rest of the batch.
    evaluated = {**variables, **updates}
    alone, _ = apply(norm, evaluated, x[:1], onehot[:1], train=False)
    both, _ = apply(norm, evaluated, x[:2], onehot[:2], train=False)
    npt.assert_allclose(alone[0], both[0], rtol=1e-6)
    running = (x[0] - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    npt.assert_allclose(alone[0], running * (1 + gain[0]) + bias[0], rtol=1e-4, atol=1e-5)


def test_conditional_batch_norm_from_a_vector_condition_is_linear_in_it():
    norm = layers.ConditionalBatchNorm()
    x, c = normal(4, 5, 2, 2, 3), normal(5, 5, 7)  # BigGAN: c = [shared embedding, z chunk]
    variables = random_variables(norm, x, c)
    out, _ = apply(norm, variables, x, c, train=True)
    p = tree(variables["params"])
    expected = np_batch_norm(x) * (1 + c @ p["gain"]["kernel"])[:, None, None] + (c @ p["bias"]["kernel"])[:, None,
                                                                                                             None]
    npt.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("heads", [1, 2])
def test_self_attention_matches_numpy(heads):
    attention = layers.SelfAttention(heads=heads)
    x = normal(6, 2, 4, 4, 16)
    variables = random_variables(attention, x)
    variables["params"]["gamma"] = jnp.asarray(0.7)
    out, _ = apply(attention, variables, x, train=False)
    p = tree(variables["params"])
    proj = lambda v, name: np.einsum("nhwc,co->nhwo", v, p[name]["kernel"][0, 0])  # noqa: E731  1×1, no bias
    pool = lambda v: v.reshape(2, 2, 2, 2, 2, -1).max((2, 4))  # noqa: E731
    theta = proj(x, "theta").reshape(2, 16, heads, -1)
    phi = pool(proj(x, "phi")).reshape(2, 4, heads, -1)
    g = pool(proj(x, "g")).reshape(2, 4, heads, -1)
    logits = np.einsum("nqhd,nkhd->nhqk", theta, phi)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("nhqk,nkhd->nqhd", weights, g).reshape(2, 4, 4, 8)
    npt.assert_allclose(out, x + 0.7 * proj(attended, "out"), rtol=1e-4, atol=1e-5)


def test_up_block_matches_numpy():
    block = layers.UpBlock(6)
    x = normal(7, 3, 4, 4, 5)
    variables = random_variables(block, x, None)
    out, _ = apply(block, variables, x, None, train=True)
    p = tree(variables["params"])
    bn = lambda v, name: np_batch_norm(v) * p[name]["norm"]["scale"] + p[name]["norm"]["bias"]  # noqa: E731
    conv = lambda v, name: np_conv(v, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    h = conv(np_up(relu(bn(x.astype(np.float64), "bn_1"))), "conv_1")
    h = conv(relu(bn(h, "bn_2")), "conv_2")
    npt.assert_allclose(out, h + conv(np_up(x), "shortcut"), rtol=1e-4, atol=1e-4)
    assert out.shape == (3, 8, 8, 6)


@pytest.mark.parametrize("first, downsample, features", [(True, True, 6), (False, True, 5), (False, False, 5)])
def test_down_block_matches_numpy(first, downsample, features):
    block = layers.DownBlock(features, hidden=4, downsample=downsample, first=first, spectral_norm=False)
    x = normal(8, 2, 4, 4, 5)
    variables = random_variables(block, x)
    out, _ = apply(block, variables, x, train=True)
    p = tree(variables["params"])
    conv = lambda v, name: np_conv(v, p[name]["kernel"]) + p[name]["bias"]  # noqa: E731
    pool = np_avg_pool if downsample else (lambda v: v)
    h = x.astype(np.float64) if first else relu(x)
    h = pool(conv(relu(conv(h, "conv_1")), "conv_2"))
    learnt = downsample or features != 5
    assert ("shortcut" in p) == learnt
    shortcut = conv(pool(x), "shortcut") if learnt else x  # an identity shortcut when nothing changes
    npt.assert_allclose(out, h + shortcut, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Whole networks: conditioning, hierarchical latents, projection, dtypes.


def test_biggan_generator_conditions_each_block_on_shared_embedding_and_its_z_chunk():
    gen = biggan.BigGANGenerator(32, ch=2, num_classes=3, shared_embedding_dim=5, attention_resolution=0)
    z, y = normal(9, 2, 8), np.array([1, 2], np.int32)  # 4 chunks of 2: the stem's, then one per block
    variables = random_variables(gen, z, y)
    params = variables["params"]
    assert params["stem"]["kernel"].shape == (2, 16 * 8)  # the first chunk only
    assert params["block_0"]["bn_1"]["gain"]["kernel"].shape == (5 + 2, 8)  # [embedding, chunk] → gains
    assert params["shared"]["embedding"].shape == (3, 5)
    assert "stem_sn" in variables["batch_stats"]  # spectral norm in the generator too
    out, _ = apply(gen, variables, z, y, train=True)
    # Changing block 2's chunk changes the image; changing nothing reproduces it exactly.
    other = z.copy()
    other[:, 6:] += 1.0
    again, _ = apply(gen, variables, z, y, train=True)
    changed, _ = apply(gen, variables, other, y, train=True)
    npt.assert_array_equal(out, again)
    assert float(jnp.max(jnp.abs(out - changed))) > 1e-4
    label_swapped, _ = apply(gen, variables, z, y[::-1], train=True)
    assert float(jnp.max(jnp.abs(out - label_swapped))) > 1e-4


def test_projection_critic_adds_the_class_embedding_inner_product():
    critic = resnet.ResNetCritic(32, ch=1, num_classes=4, spectral_norm=False)  # φ of dimension 2
    x, y = normal(10, 3, 32, 32, 3), np.array([3, 0, 1], np.int32)
    variables = random_variables(critic, x, y)

    def logits_with(embedding):
        params = {**variables["params"], "projection": {"embedding": jnp.asarray(embedding, jnp.float32)}}
        return np.asarray(apply(critic, {**variables, "params": params}, x, y, train=False)[0], np.float64)

    base = logits_with(np.zeros((4, 2)))  # w·φ + b
    phi = np.stack([logits_with(np.eye(2)[[k] * 4]) - base for k in range(2)], axis=-1)  # e_y = unit vector k
    embedding = normal(11, 4, 2)
    npt.assert_allclose(logits_with(embedding), base + np.sum(embedding[y] * phi, axis=-1), rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(phi) > 1e-3)


@pytest.mark.parametrize("make, inputs", [
    (lambda d: dcgan.DCGANGenerator(32, ch=2, dtype=d), (_spec(2, 8),)),
    (lambda d: dcgan.DCGANCritic(32, ch=2, batch_norm=True, dtype=d), (_spec(2, 32, 32, 3),)),
    (lambda d: resnet.ResNetGenerator(32, ch=2, num_classes=3, dtype=d), (_spec(2, 8), _spec(2, dtype=jnp.int32))),
    (lambda d: biggan.BigGANCritic(32, ch=4, num_classes=3, attention_resolution=16, dtype=d),
     (_spec(2, 32, 32, 3), _spec(2, dtype=jnp.int32))),
])
def test_bfloat16_compute_keeps_float32_parameters_and_outputs(make, inputs):
    module = make(jnp.bfloat16)
    variables = _shape(module, *inputs)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(lambda v, *a: module.apply(v, *a, train=False), variables, *inputs)
    assert out.dtype == jnp.float32


def test_dcgan_matches_pytorch_layers_on_the_same_weights():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    gen, critic = dcgan.DCGANGenerator(32, channels=3, ch=2), dcgan.DCGANCritic(32, ch=2, batch_norm=True)
    z, x = normal(11, 4, 5), normal(12, 4, 32, 32, 3)
    gv, cv = random_variables(gen, z, seed=1), random_variables(critic, x, seed=2)
    fake, _ = apply(gen, gv, z, train=True)
    logits, _ = apply(critic, cv, x, train=True)
    gp, cp = tree(gv["params"]), tree(cv["params"])
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731

    def bn(channels, p):
        layer = tnn.BatchNorm2d(channels).double()
        layer.weight.data, layer.bias.data = t(p["scale"]), t(p["bias"])
        return layer

    def conv_t(kernel):  # flax (kh, kw, in, out), unflipped: torch (in, out, kh, kw), flipped
        layer = tnn.ConvTranspose2d(kernel.shape[2], kernel.shape[3], 4, 2, 1, bias=False).double()
        layer.weight.data = t(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy())
        return layer

    def conv(kernel):  # flax (kh, kw, in, out): torch (out, in, kh, kw)
        layer = tnn.Conv2d(kernel.shape[2], kernel.shape[3], 4, 2, 1, bias=False).double()
        layer.weight.data = t(kernel.transpose(3, 2, 0, 1).copy())
        return layer

    # The reference's first layer: a 4×4 transposed conv of the 1×1 latent map = the dense layer to 4×4×8.
    first = tnn.ConvTranspose2d(5, 8, 4, 1, 0, bias=False).double()
    first.weight.data = t(gp["project"]["kernel"].reshape(5, 4, 4, 8).transpose(0, 3, 1, 2).copy())
    torch_gen = tnn.Sequential(first, bn(8, gp["project_bn"]), tnn.ReLU(), conv_t(gp["up_0"]["kernel"]),
                              bn(4, gp["up_0_bn"]), tnn.ReLU(), conv_t(gp["up_1"]["kernel"]), bn(2, gp["up_1_bn"]),
                              tnn.ReLU(), conv_t(gp["to_image"]["kernel"]), tnn.Tanh())
    last = tnn.Conv2d(8, 1, 4, 1, 0, bias=False).double()  # the logit over the flattened 4×4×8 map
    last.weight.data = t(cp["logit"]["kernel"].reshape(4, 4, 8, 1).transpose(3, 2, 0, 1).copy())
    lrelu = lambda: tnn.LeakyReLU(0.2)  # noqa: E731
    torch_critic = tnn.Sequential(conv(cp["down_0"]["kernel"]), lrelu(), conv(cp["down_1"]["kernel"]),
                                 bn(4, cp["down_1_bn"]), lrelu(), conv(cp["down_2"]["kernel"]), bn(8, cp["down_2_bn"]),
                                 lrelu(), last)
    torch_gen.train(), torch_critic.train()  # batch statistics, as train=True
    with torch.no_grad():
        expected_fake = torch_gen(t(z).reshape(4, 5, 1, 1)).numpy().transpose(0, 2, 3, 1)
        expected_logits = torch_critic(t(x).permute(0, 3, 1, 2)).numpy().reshape(4)
    npt.assert_allclose(fake, expected_fake, rtol=1e-4, atol=1e-4)
    npt.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# Bad input: one GanJaxError naming the value, the valid ones and the fix.


@pytest.mark.parametrize("make, sizes", [
    (dcgan.DCGANGenerator, r"\(32, 64\)"), (dcgan.DCGANCritic, r"\(32, 64\)"),
    (resnet.ResNetGenerator, r"\(32, 48, 64, 128\)"), (resnet.ResNetCritic, r"\(32, 48, 64, 128\)"),
    (biggan.BigGANGenerator, r"\(32, 64, 128\)"), (biggan.BigGANCritic, r"\(32, 64, 128\)"),
])
def test_unsupported_image_size_lists_the_kinds_sizes(make, sizes):
    with pytest.raises(GanJaxError, match=rf"image_size 28 is not supported; supported sizes: {sizes}.*image_size"):
        make(28)


def test_conditional_networks_without_labels_and_unconditional_with_labels_are_refused():
    gen = resnet.ResNetGenerator(32, ch=1, num_classes=10)
    with pytest.raises(GanJaxError, match=r"ResNetGenerator\(num_classes=10\) is class-conditional: pass labels"):
        _shape(gen, _spec(2, 8))
    with pytest.raises(GanJaxError, match=r"DCGANCritic is unconditional.*model.num_classes"):
        _shape(dcgan.DCGANCritic(32, ch=1), _spec(2, 32, 32, 3), _spec(2, dtype=jnp.int32))


def test_attention_heads_that_do_not_divide_the_channels_are_refused():
    # 16 channels at 16×16 in G (ch = 4): 8·heads must divide 16, so heads 1 or 2.
    with pytest.raises(GanJaxError, match=r"attention_heads=3 does not fit the 16 channels.*heads that fit: 1, 2"):
        biggan.BigGANGenerator(32, ch=4, attention_resolution=16, attention_heads=3)
    with pytest.raises(GanJaxError, match=r"does not fit the 12 channels.*none \(change the channel width\)"):
        resnet.ResNetCritic(32, ch=6, attention_resolution=16)  # 2·6 = 12 channels
    with pytest.raises(GanJaxError, match=r"attention_resolution=12 is not the side of a block's output; valid: 8, 16"):
        biggan.BigGANCritic(32, ch=4, attention_resolution=12)


def test_hierarchical_latent_dim_must_split_into_equal_chunks():
    gen = biggan.BigGANGenerator(32, ch=2, num_classes=3)  # 3 blocks: 4 chunks
    with pytest.raises(GanJaxError, match=r"latent_dim=90 cannot be split into 4 equal chunks.*e.g. 88 or 92"):
        gen.latent_chunks(90)
    with pytest.raises(GanJaxError, match=r"latent_dim=90 cannot be split"):
        _shape(gen, _spec(2, 90), _spec(2, dtype=jnp.int32))
    assert gen.latent_chunks(92) == 4
    assert resnet.ResNetGenerator(32).latent_chunks(90) == 1  # not hierarchical: any latent_dim


def test_build_reads_the_image_kinds_fields_and_refuses_what_they_cannot_take():
    def cfg(**fields):
        return ml_collections.ConfigDict({"latent_dim": 80, "spectral_norm": True, **fields})

    gen, critic = models.build(cfg(kind="biggan", num_classes=10), (32, 32, 3))
    assert (type(gen), gen.ch, gen.attention_resolution, critic.attention_resolution) == (
        biggan.BigGANGenerator, 96, 16, 16)  # defaults: StudioGAN's ch, attention at half the side
    gen, critic = models.build(cfg(kind="resnet", g_channels=8, d_channels=2, attention_resolution=-1), (48, 48, 1))
    assert (gen.ch, critic.ch, gen.attention_resolution, gen.channels, critic.spectral_norm) == (8, 2, 0, 1, True)
    gen, critic = models.build(cfg(kind="dcgan", g_channels=0, batch_norm=True, spectral_norm=False), (64, 64, 3))
    assert (gen.ch, critic.ch, critic.batch_norm) == (64, 64, True)
    with pytest.raises(GanJaxError, match=r"kind='resnet' has no batch norm in its critic.*batch_norm=False"):
        models.build(cfg(kind="resnet", batch_norm=True), (32, 32, 3))
    with pytest.raises(GanJaxError, match=r"latent_dim=101 cannot be split into 4 equal chunks"):
        models.build(cfg(kind="biggan", latent_dim=101), (32, 32, 3))
    with pytest.raises(GanJaxError, match=r"kind='dcgan' needs a square image data_shape"):
        models.build(cfg(kind="dcgan"), (2,))
    with pytest.raises(GanJaxError, match=r"batch_norm=True cannot be used with the 'gp' penalty"):
        models.check_critic_compatible(cfg(kind="dcgan", batch_norm=True), "gp")
