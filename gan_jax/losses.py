"""Adversarial losses on critic outputs (logits), chosen by name from one registry.

Each loss is an `AdversarialLoss`: a critic loss and a generator loss, both to be
MINIMISED, both weighted means over examples of a per-example term::

    loss = gan_jax.losses.get("non_saturating")
    critic_loss = loss.critic(real_logits, fake_logits)
    generator_loss = loss.generator(fake_logits)

For "minimax" and "non_saturating", D(x) = sigmoid(logit) and the logs are taken in stable form:
log D = log_sigmoid(l) = −softplus(−l), log(1 − D) = log_sigmoid(−l) = −softplus(l).

The f-GAN family ("fgan_kl", "fgan_reverse_kl", "fgan_js", "fgan_pearson", "fgan_squared_hellinger";
Nowozin, Cseke & Tomioka 2016) estimates D_f(P‖Q) = E_Q[f(dP/dQ)] = sup_T E_P[T] − E_Q[f*(T)], P = data,
Q = generator. The critic's raw output v is mapped into dom f* by the output activation T = g_f(v)
inside the loss (so any critic works), see `F_DIVERGENCES`. At the optimum T*(x) = f′(p(x)/q(x)) and
the critic loss equals −D_f(P‖Q).
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Term = Callable[[jax.Array], jax.Array]


class AdversarialLoss(NamedTuple):
    """A named pair of losses to minimise: critic(real, fake, real_w, fake_w), generator(fake, w)."""

    name: str
    critic: Callable[..., jax.Array]
    generator: Callable[..., jax.Array]


def _as_per_example(logits: jax.Array, what: str) -> jax.Array:
    """Logits of shape (n,) or (n, 1) as a float vector (n,)."""
    logits = jnp.asarray(logits)
    if not (logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)):
        raise ValueError(f"{what} has shape {logits.shape}; expected (n,) or (n, 1), one logit per example.")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(jnp.float32)
    return logits.reshape(-1)


def _side(
    term: Term, logits: jax.Array, weights: Optional[jax.Array], logits_name: str, weights_name: str
) -> jax.Array:
    """E_w[term(l)] = Σ wᵢ·term(lᵢ) / Σ wᵢ over one batch (plain mean without weights; 0 if all wᵢ = 0)."""
    values = term(_as_per_example(logits, logits_name))
    if weights is None:
        return jnp.mean(values)
    weights = jnp.asarray(weights, dtype=values.dtype)
    n = values.shape[0]
    if weights.shape not in ((), (n,), (n, 1)):
        raise ValueError(
            f"{weights_name} has shape {weights.shape} but {logits_name} has shape {jnp.shape(logits)}; "
            f"give one weight per example: shape (), ({n},) or ({n}, 1)."
        )
    weights = jnp.broadcast_to(weights.reshape(-1), (n,))
    total = jnp.sum(weights)
    nonzero = total != 0
    # Double where: all-zero weights give 0 with finite (zero) gradients instead of 0/0.
    return jnp.where(nonzero, jnp.sum(weights * values) / jnp.where(nonzero, total, 1.0), 0.0)


def _discriminator(real_term: Term, fake_term: Term) -> Callable[..., jax.Array]:
    """L_D = E_w[real_term(D(x))] + E_w[fake_term(D(G(z)))]."""

    def discriminator(
        real_logits: jax.Array,
        fake_logits: jax.Array,
        real_weights: Optional[jax.Array] = None,
        fake_weights: Optional[jax.Array] = None,
    ) -> jax.Array:
        real = _side(real_term, real_logits, real_weights, "real_logits", "real_weights")
        return real + _side(fake_term, fake_logits, fake_weights, "fake_logits", "fake_weights")

    return discriminator


def _generator(fake_term: Term) -> Callable[..., jax.Array]:
    """L_G = E_w[fake_term(D(G(z)))]."""

    def generator(fake_logits: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
        return _side(fake_term, fake_logits, weights, "fake_logits", "weights")

    return generator


# Binary cross-entropy: −log D(x) = softplus(−l) on real, −log(1 − D(G(z))) = softplus(l) on fake.
_bce_discriminator = _discriminator(lambda l: jax.nn.softplus(-l), jax.nn.softplus)
# −E f(G(z)): the generator loss of both the Wasserstein and the hinge critic.
_critic_score_generator = _generator(lambda l: -l)


class FDivergence(NamedTuple):
    """An f-divergence D_f(P‖Q) = E_Q[f(dP/dQ)] in variational form (Nowozin et al. 2016, Table 2).

    Attributes:
      name: short name; the loss is registered as "fgan_<name>".
      f: the generator function f(u), convex with f(1) = 0 (formula, for documentation).
      conjugate: f*(t) = sup_u (u·t − f(u)) (formula, for documentation).
      activation: g_f, the output activation v ↦ T = g_f(v) into dom f*; formula in `activation_formula`.
      activation_formula: g_f(v) as a formula.
      conjugate_of_activation: v ↦ f*(g_f(v)) in a closed, numerically stable form (never composed
        naively: e.g. for JS, −log(2 − exp(g(v))) = softplus(v) − log 2 has no cancellation).
      optimal_critic: T* = f′(u) at u = p/q (formula, for documentation).
    """

    name: str
    f: str
    conjugate: str
    activation: Term
    activation_formula: str
    conjugate_of_activation: Term
    optimal_critic: str


_LOG2 = math.log(2.0)

# The five f-divergences of Nowozin et al. (2016), Table 2 (JS as D_f = 2·JSD, f as in the table).
F_DIVERGENCES: tuple[FDivergence, ...] = (
    # D_f = KL(P‖Q).
    FDivergence(
        name="kl",
        f="u·log u",
        conjugate="exp(t − 1)",
        activation=lambda v: v,
        activation_formula="v",
        conjugate_of_activation=lambda v: jnp.exp(v - 1.0),
        optimal_critic="1 + log u",
    ),
    # D_f = KL(Q‖P).
    FDivergence(
        name="reverse_kl",
        f="−log u",
        conjugate="−1 − log(−t), t < 0",
        activation=lambda v: -jnp.exp(-v),
        activation_formula="−exp(−v)",
        conjugate_of_activation=lambda v: v - 1.0,  # −1 − log(exp(−v)) = v − 1
        optimal_critic="−1/u",
    ),
    # D_f = 2·JSD(P, Q) = KL(P‖M) + KL(Q‖M), M = ½(P + Q); the GAN critic loss shifted by −2·log 2.
    FDivergence(
        name="js",
        f="u·log u − (u + 1)·log((u + 1)/2)",
        conjugate="−log(2 − exp(t)), t < log 2",
        activation=lambda v: _LOG2 - jax.nn.softplus(-v),  # log 2 + log_sigmoid(v) = log(2·D)
        activation_formula="log 2 − softplus(−v) = log 2 − log(1 + exp(−v))",
        conjugate_of_activation=lambda v: jax.nn.softplus(v) - _LOG2,  # −log(2 − 2·sigmoid(v))
        optimal_critic="log(2u/(u + 1))",
    ),
    # D_f = Pearson χ²(P‖Q) = Σ (p − q)²/q.
    FDivergence(
        name="pearson",
        f="(u − 1)²",
        conjugate="t²/4 + t",
        activation=lambda v: v,
        activation_formula="v",
        conjugate_of_activation=lambda v: 0.25 * jnp.square(v) + v,
        optimal_critic="2(u − 1)",
    ),
    # D_f = squared Hellinger Σ (√p − √q)² (no ½ factor).
    FDivergence(
        name="squared_hellinger",
        f="(√u − 1)²",
        conjugate="t/(1 − t), t < 1",
        activation=lambda v: -jnp.expm1(-v),  # 1 − exp(−v)
        activation_formula="1 − exp(−v)",
        conjugate_of_activation=jnp.expm1,  # (1 − e^(−v))/e^(−v) = e^v − 1
        optimal_critic="1 − 1/√u",
    ),
)


def _fgan(divergence: FDivergence) -> AdversarialLoss:
    """f-GAN: critic −(E_P[g(v)] − E_Q[f*(g(v))]); generator −E_Q[g(v)] (Nowozin et al. 2016, Sec. 3.2).

    The generator's saddle-point loss would be −E_Q[f*(g(v))]. Like the non-saturating GAN loss (which it
    is, up to a constant, for "js"), −E_Q[g(v)] keeps the stationary point (Nowozin et al. Sec. 3.2 show
    this with Goodfellow et al.'s argument and found it useful for all divergences) but does not saturate
    where the critic confidently rejects the fakes (v → −∞): there the saddle form's gradient vanishes for
    "js" (it is the saturating log(1 − D) + log 2), "kl" (exp(v − 1)) and "squared_hellinger" (exp(v)),
    while −g(v) keeps a gradient of order one (KL, JS, Pearson) or a growing one (reverse KL, Hellinger).
    """
    negative_score = lambda v: -divergence.activation(v)  # noqa: E731
    return AdversarialLoss(
        f"fgan_{divergence.name}",
        _discriminator(negative_score, divergence.conjugate_of_activation),
        _generator(negative_score),
    )


_REGISTRY: dict[str, AdversarialLoss] = {
    loss.name: loss
    for loss in (
        # Saturating generator: minimise log(1 − D(G(z))) = log_sigmoid(−l).
        AdversarialLoss("minimax", _bce_discriminator, _generator(lambda l: jax.nn.log_sigmoid(-l))),
        # Non-saturating generator: minimise −log D(G(z)) = softplus(−l).
        AdversarialLoss("non_saturating", _bce_discriminator, _generator(lambda l: jax.nn.softplus(-l))),
        # Critic: E f(G(z)) − E f(x); generator: −E f(G(z)).
        AdversarialLoss("wasserstein", _discriminator(lambda l: -l, lambda l: l), _critic_score_generator),
        # Critic: E relu(1 − f(x)) + E relu(1 + f(G(z))); generator: −E f(G(z)).
        AdversarialLoss(
            "hinge",
            _discriminator(lambda l: jax.nn.relu(1.0 - l), lambda l: jax.nn.relu(1.0 + l)),
            _critic_score_generator,
        ),
        # LSGAN (a=0, b=1, c=1): critic ½(D(x) − 1)² + ½D(G(z))²; generator ½(D(G(z)) − 1)².
        AdversarialLoss(
            "least_squares",
            _discriminator(lambda l: 0.5 * jnp.square(l - 1.0), lambda l: 0.5 * jnp.square(l)),
            _generator(lambda l: 0.5 * jnp.square(l - 1.0)),
        ),
        # f-GAN: critic E_P[−g(v)] + E_Q[f*(g(v))] ≥ −D_f(P‖Q); generator −E_Q[g(v)] (see `_fgan`).
        *map(_fgan, F_DIVERGENCES),
    )
}


def names() -> tuple[str, ...]:
    """Names of the registered adversarial losses."""
    return tuple(_REGISTRY)


def get(name: str) -> AdversarialLoss:
    """The adversarial loss registered under `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown adversarial loss {name!r}; valid names: {', '.join(names())}.") from None
