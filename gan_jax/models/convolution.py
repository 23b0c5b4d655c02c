"""Convolutions whose gradients XLA:CPU computes fast: `conv_general_dilated`, the drop-in for
``lax.conv_general_dilated`` that the image networks' flax Conv / ConvTranspose layers are given.

On CPU a convolution's kernel gradient goes as kh·kw matrix products (one, of the patches side by side, when the
input has few channels), its input gradient and a transposed convolution (input dilation) as phase convolutions of
undilated operands, or, with few output channels, as one product for all taps added per phase (the derivations and
measurements are in the comments below); every other platform, and every call outside NHWC/HWIO without kernel
dilation or groups, keeps lax's convolution and XLA's own gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

# ---------------------------------------------------------------------------------------------------------
# Convolution with a kernel gradient XLA:CPU computes fast.
#
# XLA:CPU (jaxlib 0.10.2) computes a convolution's kernel gradient ∂L/∂W (itself a convolution, of the input with
# the output gradient) several times slower than the convolution (measured on the 2-core CPU: a 3×3, 128 → 128
# convolution of a (64, 32, 32, 128) batch, forward 0.9 s, input gradient 2.1 s, kernel gradient 15.7 s; PyTorch's
# forward + backward 3.4 s). As kh·kw matrix products, ∂L/∂W[a, b] = Σ_{n,i,j} x̃[n, s·i + a, s·j + b]ᵀ g[n, i, j]
# (x̃ the padded, dilated input), it takes about the forward's time. The image networks' convolutions
# (NHWC, HWIO, no kernel dilation or groups) use it on CPU, but for transposed ones (below: computed by phases);
# every other platform keeps XLA's own gradients. The input gradient, on CPU: below.


def _lax_conv(x: jax.Array, w: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
              lhs_dilation: tuple[int, ...]) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_gradient_as_products(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...],
                                 strides: tuple[int, ...], padding: tuple[tuple[int, int], ...],
                                 lhs_dilation: tuple[int, ...]) -> jax.Array:
    """∂L/∂W[a, b] = Σ_{n,i,j} x̃[n, s_h·i + a, s_w·j + b, :]ᵀ g[n, i, j, :], one matrix product per kernel tap (or
    one for all taps, of the patches side by side, when kh·kw·c_in ≤ c_out)."""
    kh, kw, c_in, _ = kernel_shape
    n, h_out, w_out, _ = g.shape
    pads = ((0, 0, 0), *((lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)), (0, 0, 0))
    padded = jax.lax.pad(x, jnp.zeros((), x.dtype), pads)
    g = g.reshape(-1, g.shape[-1])
    patches = [jax.lax.slice(padded, (0, a, b, 0),
                             (n, a + strides[0] * (h_out - 1) + 1, b + strides[1] * (w_out - 1) + 1, c_in),
                             (1, strides[0], strides[1], 1)) for a in range(kh) for b in range(kw)]
    # Few input channels (DCGAN's first critic layer, 3 → 64): one product of the patches side by side (im2col),
    # not kh·kw products with 3 rows each; at batch 256 on the 2-core CPU 53.9 → 40.2 ms (PyTorch 23.8 ms).
    if kh * kw * c_in <= g.shape[-1]:
        patches = [jnp.stack(patches, axis=-2)]
    # As 2-D products (not an einsum over n, h, w): 1.7× faster on XLA:CPU, measured.
    taps = [jnp.dot(p.reshape(g.shape[0], -1).T, g, preferred_element_type=jnp.float32) for p in patches]
    return jnp.concatenate(taps).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_fast_kernel_gradient(x, w, strides, padding, lhs_dilation):
    return _lax_conv(x, w, strides, padding, lhs_dilation)


def _conv_forward(x, w, strides, padding, lhs_dilation):
    return _lax_conv(x, w, strides, padding, lhs_dilation), (x, w)


def _conv_backward(strides, padding, lhs_dilation, residuals, g):
    x, w = residuals
    dx = jax.lax.platform_dependent(
        w, g, cpu=lambda w, g: _input_gradient(g, w, x.shape, strides, padding, lhs_dilation).astype(x.dtype),
        default=lambda w, g: jax.linear_transpose(lambda v: _lax_conv(v, w, strides, padding, lhs_dilation), x)(g)[0])
    dw = jax.lax.platform_dependent(
        x, g,
        cpu=lambda x, g: _kernel_gradient_as_products(x, g, w.shape, strides, padding, lhs_dilation).astype(w.dtype),
        default=lambda x, g: jax.linear_transpose(lambda k: _lax_conv(x, k, strides, padding, lhs_dilation), w)(g)[0])
    return dx, dw


_conv_fast_kernel_gradient.defvjp(_conv_forward, _conv_backward)


# The input gradient, on CPU. Along one axis, ∂L/∂x̃[j] = Σ_{o,k: s·o + k = j + P_lo} g[o]·w[k] (x̃ the dilated input,
# of length D = (N − 1)·d + 1): the stride-1 convolution of g dilated by s, padded (K − 1 − P_lo, D − 1 − (O − 1)·s +
# P_lo), with the kernel flipped and its in/out axes swapped; ∂L/∂x = ∂L/∂x̃[::d], that convolution with stride d.
# Through `conv_general_dilated`, a strided convolution's input gradient (a transposed convolution) thus goes by phases,
# without products on g's inserted zeros. XLA's own (`jax.linear_transpose`) is the same convolution with the flip
# folded into the kernel's layout, which in the engine's DCGAN 64 step XLA:CPU computed for the critic update as plain
# loops, not Eigen (up to 1.8 s each, profiled under load). 2-core AMD EPYC, 2026-12-07, medians measured interleaved:
# the step (batch 128) 2.63 → 1.61 s; alone at batch 128, XLA's / by phases: 32×32, 64 → 128 channels 112 / 41 ms, 16×16
# 56 / 27 ms, 8×8 49 / 45 ms; 64×64, 3 → 64 (only the generator update's) 7 / 37 ms: phase convolutions with 3 output
# channels are slow. benchmarks/image_speed.py dcgan64, engine / PyTorch eager: 0.61× → 1.07×.


def _input_gradient(g: jax.Array, w: jax.Array, x_shape: tuple[int, ...], strides: tuple[int, ...],
                    padding: tuple[tuple[int, int], ...], lhs_dilation: tuple[int, ...]) -> jax.Array:
    """∂L/∂x = conv(g dilated by s, flip(W)ᵀ, stride d, padding (K − 1 − P_lo, D − 1 − (O − 1)·s + P_lo))."""
    pads = [(k - 1 - lo, (size - 1) * d - (o - 1) * s + lo) for k, (lo, _), size, d, o, s
            in zip(w.shape[:2], padding, x_shape[1:3], lhs_dilation, g.shape[1:3], strides)]
    return conv_general_dilated(g, jnp.flip(w, (0, 1)).swapaxes(2, 3), lhs_dilation, pads, strides,
                                dimension_numbers=("NHWC", "HWIO", "NHWC"))


# A transposed convolution (input dilation s, window stride 1) as s_h·s_w convolutions of the undilated input.
#
# Along one axis (input length N, kernel K, padding (P_lo, P_hi)): y[o] = Σ_k x̃[o + k − P_lo]·w[k], with the dilated
# input x̃[s·i] = x[i] and 0 elsewhere, for o < O = (N − 1)·s + 1 + P_lo + P_hi − K + 1. An output o = s·q + r
# (phase r < s) meets x only through the taps k ≡ P_lo − r (mod s): k = k_r + s·m, k_r = (P_lo − r) mod s,
# m < M_r = ⌈(K − k_r)/s⌉, at i = q + m − e_r, e_r = (P_lo − r − k_r)/s (an integer). So
#     y[s·q + r] = Σ_{m < M_r} x[q − e_r + m]·w[k_r + s·m]:
# a stride-1 VALID convolution of x padded by (e_r, Q + M_r − 1 − N − e_r) (negative pads crop) with the sub-kernel
# w[k_r::s], for q < Q = ⌈O/s⌉; a phase without taps (M_r = 0, only when s > K) is 0. The phases interleave,
# y[s·q + r] = phase_r[q], and the result is cropped to O. DCGAN's layer (s = 2, K = 4, P = (2, 2)): phase 0 takes taps
# 0, 2 of x padded (1, 0), phase 1 taps 1, 3 of x padded (0, 1). XLA:CPU computes the dilated convolution densely,
# 3/4 of its products (s = 2) on the zeros, in the forward pass and in both gradients; the phases compute none. Their
# gradients are XLA's own (stride-1 convolutions of the undilated input). DCGAN 64's generator forward + backward at
# batch 128 on the 2-core CPU, channel multiplier 8 / 64 (medians, measured interleaved): dilated, kernel gradient
# as products, 0.37 s / 5.0 s; by phases, kernel gradients as products 0.19 s / 1.66 s, XLA's 0.11 s / 1.29 s.
# Only CPU takes this path; other platforms keep XLA's transposed convolution (on GPUs XLA hands it to cuDNN as a
# backward-data convolution, without the zeros; not measured here).


def _phase(size: int, kernel: int, stride: int, low: int, per_phase: int, r: int) -> tuple[int, int, tuple[int, int]]:
    """(k_r, M_r, x's padding (e_r, Q + M_r − 1 − N − e_r)) of phase r along one axis: see the derivation above."""
    first_tap = (low - r) % stride
    taps = max(-(-(kernel - first_tap) // stride), 0)
    shift = (low - r - first_tap) // stride
    return first_tap, taps, (shift, per_phase + taps - 1 - size - shift)


def _phase_of_products(products: jax.Array, first_taps: tuple[int, int], taps: tuple[int, int],
                       pads: tuple[tuple[int, int], tuple[int, int]], strides: tuple[int, ...]) -> jax.Array:
    """phase[q] = Σ_m x[q − e + m]·w[k_r + s·m] from products[..., a, b, :] = x·W[a, b]: tap m's product shifted by
    e − m, i.e. padded (e − m, P_hi − (M − 1) + m) for the phase convolution's padding (e, P_hi), summed."""
    return sum(jax.lax.pad(products[:, :, :, first_taps[0] + strides[0] * i, first_taps[1] + strides[1] * j],
                           jnp.zeros((), products.dtype),
                           ((0, 0, 0), (pads[0][0] - i, pads[0][1] - taps[0] + 1 + i, 0),
                            (pads[1][0] - j, pads[1][1] - taps[1] + 1 + j, 0), (0, 0, 0)))
               for i in range(taps[0]) for j in range(taps[1]))


def _conv_by_phases(x: jax.Array, w: jax.Array, padding: tuple[tuple[int, int], ...],
                    lhs_dilation: tuple[int, ...]) -> jax.Array:
    """The stride-1 convolution of x dilated by s = lhs_dilation as s_h·s_w phase convolutions of x, interleaved."""
    n, (kh, kw, c_in, c_out) = x.shape[0], w.shape
    dtype = jnp.result_type(x, w)
    out = [(size - 1) * s + 1 + lo + hi - k + 1
           for size, k, s, (lo, hi) in zip(x.shape[1:3], w.shape[:2], lhs_dilation, padding)]
    per_phase = [-(-o // s) for o, s in zip(out, lhs_dilation)]
    axes = list(zip(x.shape[1:3], w.shape[:2], lhs_dilation, (lo for lo, _ in padding), per_phase))
    # Few output channels (kh·kw·c_out ≤ c_in: DCGAN's last generator layer 64 → 3, and the input gradient of its
    # first critic layer): one product x·W[a, b] for every tap at once, each tap's product then added to its phase,
    # shifted; Eigen's phase convolutions with 3 output channels are slow. At batch 128 on the 2-core CPU, forward /
    # input gradient / kernel gradient 32.5 / 44.5 / 41.9 ms by phase convolutions, 3.7 / 24.8 / 18.5 by products
    # (PyTorch 14.2 / 10.8 / 4.2); the first critic layer's input gradient (batch 256) 71.9 → 19.8 ms.
    by_products = kh * kw * c_out <= c_in
    if by_products:
        # In float32, whatever the compute dtype: the taps are summed before the one rounding to it.
        products = jnp.dot(x.reshape(-1, c_in), w.transpose(2, 0, 1, 3).reshape(c_in, -1),
                           preferred_element_type=jnp.float32)
        products = products.reshape(*x.shape[:3], kh, kw, c_out)
    rows = []
    for r_h in range(lhs_dilation[0]):
        row = []
        for r_w in range(lhs_dilation[1]):
            (k_h, m_h, pad_h), (k_w, m_w, pad_w) = (_phase(*axis, r) for axis, r in zip(axes, (r_h, r_w)))
            if not (m_h and m_w):
                row.append(jnp.zeros((n, *per_phase, c_out), dtype))
            elif by_products:
                row.append(_phase_of_products(products, (k_h, k_w), (m_h, m_w), (pad_h, pad_w),
                                              lhs_dilation).astype(dtype))
            else:
                sub = w[k_h::lhs_dilation[0], k_w::lhs_dilation[1]]
                row.append(_lax_conv(x, sub, (1, 1), (pad_h, pad_w), (1, 1)))
        rows.append(jnp.stack(row, axis=3))  # (n, Q_h, Q_w, s_w, c)
    y = jnp.stack(rows, axis=2)  # (n, Q_h, s_h, Q_w, s_w, c): y[:, s_h·q_h + r_h, s_w·q_w + r_w]
    y = y.reshape(n, per_phase[0] * lhs_dilation[0], per_phase[1] * lhs_dilation[1], c_out)
    return y[:, :out[0], :out[1]]


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Any, padding: Any, lhs_dilation: Any = None,
                         rhs_dilation: Any = None, dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None) -> jax.Array:
    """``lax.conv_general_dilated`` (the signature flax's Conv calls) for NHWC inputs and HWIO kernels without kernel
    dilation or groups, on CPU with the kernel gradient as matrix products and a transposed convolution (input
    dilation, stride 1; also a strided one's input gradient) as phase convolutions of the undilated input (or, with
    few output channels, one product for all taps added per phase); other calls go to lax unchanged."""
    strides, spatial = tuple(window_strides), lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * spatial)
    plain = (spatial == 2 and feature_group_count == 1 and precision is None
             and tuple(rhs_dilation or (1,) * spatial) == (1,) * spatial
             and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision)
    if isinstance(padding, str):
        dilated = tuple((size - 1) * d + 1 for size, d in zip(lhs.shape[1:3], lhs_dilation))
        padding = jax.lax.padtype_to_pads(dilated, rhs.shape[:2], strides, padding)
    padding = tuple(tuple(p) for p in padding)
    if lhs_dilation != (1, 1) and strides == (1, 1):
        return jax.lax.platform_dependent(
            lhs, rhs, cpu=lambda x, w: _conv_by_phases(x, w, padding, lhs_dilation),
            default=lambda x, w: _conv_fast_kernel_gradient(x, w, strides, padding, lhs_dilation))
    return _conv_fast_kernel_gradient(lhs, rhs, strides, padding, lhs_dilation)
