"""The image GANs of benchmarks/image_speed.py in PyTorch, layer for layer as gan_jax.models builds them, and their
training step as gan_jax.engine takes it, eager or under torch.compile.

- "resnet" at 32×32: the SNGAN ResNet pair of gan_jax.models.resnet (generator: dense stem to a 4×4 map of 4·ch
  channels, three up-sampling residual blocks BN-ReLU-up-conv3×3-BN-ReLU-conv3×3 + up(conv1×1), BN-ReLU-conv3×3,
  tanh; critic: the optimized first block, a down-sampling block and two plain blocks of 2·ch channels, ReLU, sum
  over positions, dense logit; spectral norm on every critic layer, one power iteration per training forward).
- "dcgan" at 64×64: the DCGAN pair of gan_jax.models.dcgan (no biases; generator: dense to a 4×4 map of 8·ch, BN,
  ReLU, 4×4 stride-2 transposed convolutions to 4·ch, 2·ch, ch with BN-ReLU, one to the image, tanh; critic: 4×4
  stride-2 convolutions ch … 8·ch, LeakyReLU(0.2), BN after all but the first, dense logit over the 4×4 map).

One step = n_critic critic updates (fakes from the generator in training mode without gradients, the critic on
[real, fake] in one batch, its parameters updated) then one generator update (the critic in eval mode and frozen),
Adam(fused=True) on each, as gan_jax.engine's step; on CUDA with cudnn.benchmark. Images are NCHW; real batches are
random rows of a uint8 tensor held on the device, mapped to [−1, 1] as gan_jax.data.images.to_model_input does.
`spec` (a JSON dict, `image_speed.torch_spec`) says which GAN, its widths, loss, batch, optimizers, device and
compute dtype ("bfloat16": forwards and losses under torch.autocast).

A worker serves it (benchmarks.torch_worker.TorchWorker) as `python -m benchmarks.torch_image_nets SPEC THREADS`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_worker import serve_requests

# gan_jax.models.resnet.PLANS[32] and gan_jax.models.dcgan.WIDTHS[64]: widths as multiples of ch.
RESNET32 = dict(bottom=4, generator=4, critic=2, downsample=(True, True, False, False))
DCGAN64 = (8, 4, 2, 1)
IMAGE_SIZES = {"resnet": 32, "dcgan": 64}

LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    # (critic loss of (real logits, fake logits), generator loss of fake logits), as gan_jax.losses.
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
    "non_saturating": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), lambda f: F.softplus(-f).mean()),
}


def _layer(layer: nn.Module, init: Callable[[torch.Tensor], Any], spectral_norm: bool = False) -> nn.Module:
    """`layer` with its weight drawn by `init`, a zero bias, wrapped in spectral norm (1 power iteration) if asked."""
    init(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


def _xavier(gain: float) -> Callable[[torch.Tensor], Any]:
    """W ~ U(±gain·√(6/(fan_in + fan_out))) (gan_jax.models.layers.xavier_uniform: the same fans)."""
    return functools.partial(nn.init.xavier_uniform_, gain=gain)


_RESIDUAL, _PLAIN = _xavier(math.sqrt(2.0)), _xavier(1.0)  # SNGAN's gains: residual 3×3 convs, the rest
_DCGAN_INIT = functools.partial(nn.init.normal_, mean=0.0, std=0.02)


class UpBlock(nn.Module):
    """h = conv₂(ReLU(BN₂(conv₁(up(ReLU(BN₁(x))))))) + up(conv_sc(x)), nearest ×2 up-sampling."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.bn_1, self.bn_2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv_1 = _layer(nn.Conv2d(c_in, c_out, 3, padding=1), _RESIDUAL)
        self.conv_2 = _layer(nn.Conv2d(c_out, c_out, 3, padding=1), _RESIDUAL)
        self.shortcut = _layer(nn.Conv2d(c_in, c_out, 1), _PLAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.interpolate(F.relu(self.bn_1(x)), scale_factor=2))
        h = self.conv_2(F.relu(self.bn_2(h)))
        return h + F.interpolate(self.shortcut(x), scale_factor=2)


class DownBlock(nn.Module):
    """h = pool(conv₂(ReLU(conv₁(ReLU(x))))) + conv_sc(pool(x)) (no first ReLU in the optimized first block; the
    shortcut conv only where the width or the side changes; pool: 2×2 average where `downsample`)."""

    def __init__(self, c_in: int, hidden: int, c_out: int, downsample: bool, first: bool, spectral_norm: bool):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv_1 = _layer(nn.Conv2d(c_in, hidden, 3, padding=1), _RESIDUAL, spectral_norm)
        self.conv_2 = _layer(nn.Conv2d(hidden, c_out, 3, padding=1), _RESIDUAL, spectral_norm)
        self.shortcut = (_layer(nn.Conv2d(c_in, c_out, 1), _PLAIN, spectral_norm)
                         if downsample or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = (lambda v: F.avg_pool2d(v, 2)) if self.downsample else (lambda v: v)
        h = self.conv_1(x if self.first else F.relu(x))
        return pool(self.conv_2(F.relu(h))) + self.shortcut(pool(x))


class ResNetGenerator32(nn.Module):
    """G(z) = tanh(conv(ReLU(BN(B₃(B₂(B₁(reshape(W z)))))))), B_i the up-sampling blocks, 4·ch channels."""

    def __init__(self, latent_dim: int, ch: int, channels: int):
        super().__init__()
        self.width, self.bottom = RESNET32["generator"] * ch, RESNET32["bottom"]
        self.stem = _layer(nn.Linear(latent_dim, self.bottom**2 * self.width), _PLAIN)
        self.blocks = nn.Sequential(*[UpBlock(self.width, self.width) for _ in range(3)])
        self.bn_out = nn.BatchNorm2d(self.width)
        self.to_image = _layer(nn.Conv2d(self.width, channels, 3, padding=1), _PLAIN)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z).view(-1, self.width, self.bottom, self.bottom)
        return torch.tanh(self.to_image(F.relu(self.bn_out(self.blocks(h)))))


class ResNetCritic32(nn.Module):
    """f(x) = w·Σ_{h,w} ReLU(D₄(D₃(D₂(D₁(x))))) + b, D₁ the optimized block, 2·ch channels; spectral norm optional."""

    def __init__(self, ch: int, channels: int, spectral_norm: bool):
        super().__init__()
        width, blocks, c_in = RESNET32["critic"] * ch, [], channels
        for i, down in enumerate(RESNET32["downsample"]):
            blocks.append(DownBlock(c_in, width if i == 0 else c_in, width, down, i == 0, spectral_norm))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.logit = _layer(nn.Linear(width, 1), _PLAIN, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(F.relu(self.blocks(x)).sum(dim=(2, 3)))[:, 0]


class DCGANGenerator64(nn.Module):
    """G(z) = tanh(convT↑2(ReLU(BN(… ReLU(BN(reshape(W z))) …)))), widths 8·ch, 4·ch, 2·ch, ch, no biases."""

    def __init__(self, latent_dim: int, ch: int, channels: int):
        super().__init__()
        widths = [m * ch for m in DCGAN64]
        self.width = widths[0]
        self.project = _layer(nn.Linear(latent_dim, 16 * widths[0], bias=False), _DCGAN_INIT)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [_layer(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), _DCGAN_INIT),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [_layer(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), _DCGAN_INIT), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, self.width, 4, 4))


class DCGANCritic64(nn.Module):
    """f(x) = w·flatten(lrelu(BN(conv↓2(… lrelu(conv↓2(x)) …)))), widths ch … 8·ch, no biases, BN (not on the
    first layer) and spectral norm optional."""

    def __init__(self, ch: int, channels: int, spectral_norm: bool, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [m * ch for m in reversed(DCGAN64)]
        for i, (c_in, c_out) in enumerate(zip([channels, *widths], widths)):
            layers.append(_layer(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), _DCGAN_INIT, spectral_norm))
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.logit = _layer(nn.Linear(16 * DCGAN64[0] * ch, 1, bias=False), _DCGAN_INIT, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.body(x))[:, 0]


def build_pair(spec: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) of `spec["kind"]` ("resnet" at 32×32, "dcgan" at 64×64) with its widths and norms."""
    kind, size = spec["kind"], spec["image_size"]
    if IMAGE_SIZES.get(kind) != size:
        raise ValueError(f"no PyTorch {kind!r} pair at {size}×{size}; available: "
                         f"{', '.join(f'{k} at {s}×{s}' for k, s in IMAGE_SIZES.items())}")
    c, latent = spec["channels"], spec["latent_dim"]
    if kind == "resnet":
        return (ResNetGenerator32(latent, spec["g_ch"], c),
                ResNetCritic32(spec["d_ch"], c, spec["spectral_norm"]))
    return (DCGANGenerator64(latent, spec["g_ch"], c),
            DCGANCritic64(spec["d_ch"], c, spec["spectral_norm"], spec["batch_norm"]))


def parameter_count(module: nn.Module) -> int:
    """Number of trained parameters (spectral norm's u, v and batch norm's running statistics are buffers)."""
    return sum(p.numel() for p in module.parameters())


def make_step(spec: dict[str, Any], compiled: bool = False) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """`step()`: one generator step (n_critic critic updates, then one generator update) of the spec's GAN, its
    networks run eagerly or through torch.compile; returns (last critic loss, generator loss), still on the device.
    """
    if spec["loss"] not in LOSSES:
        raise ValueError(f"loss {spec['loss']!r} has no PyTorch version here; available: {', '.join(LOSSES)}")
    critic_loss, generator_loss = LOSSES[spec["loss"]]
    device = torch.device(spec["device"])
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: cuDNN picks its fastest convolutions
    generator, critic = (m.to(device) for m in build_pair(spec))
    adam = lambda m, o: torch.optim.Adam(m.parameters(), lr=o["learning_rate"], betas=(o["b1"], o["b2"]),  # noqa: E731
                                         fused=True)
    g_opt, c_opt = adam(generator, spec["generator_optim"]), adam(critic, spec["critic_optim"])
    g, f = (torch.compile(generator), torch.compile(critic)) if compiled else (generator, critic)
    n, latent, size, channels = spec["batch_size"], spec["latent_dim"], spec["image_size"], spec["channels"]
    pixels = torch.randint(0, 256, (spec["data_count"], channels, size, size), dtype=torch.uint8, device=device)
    autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16,
                                 enabled=spec["dtype"] == "bfloat16")

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        critic.requires_grad_(True)
        for _ in range(spec["n_critic"]):
            real = pixels[torch.randint(0, len(pixels), (n,), device=device)].float() * (2.0 / 255.0) - 1.0
            with autocast():
                with torch.no_grad():
                    fake = g(torch.randn(n, latent, device=device))
                real_logits, fake_logits = f(torch.cat([real, fake])).float().chunk(2)
                c_loss = critic_loss(real_logits, fake_logits)
            c_opt.zero_grad(set_to_none=True)
            c_loss.backward()
            c_opt.step()
        critic.requires_grad_(False)
        critic.eval()
        with autocast():
            g_loss = generator_loss(f(g(torch.randn(n, latent, device=device))).float())
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        critic.train()
        return c_loss.detach(), g_loss.detach()

    return step


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serves PyTorch image GAN steps over stdin/stdout.")
    parser.add_argument("spec", type=json.loads, help="JSON spec (benchmarks/image_speed.py's torch_spec)")
    parser.add_argument("threads", type=int)
    cli = parser.parse_args()
    serve_requests(cli.threads, functools.partial(make_step, cli.spec))
