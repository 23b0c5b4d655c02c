"""Adversarial losses on critic outputs (logits), chosen by name from one registry.

Each loss is an `AdversarialLoss`: a discriminator (critic) loss and a generator loss, both to be
MINIMISED, both weighted means over examples of a per-example term::

    loss = gan_jax.losses.get("non_saturating")
    d_loss = loss.discriminator(real_logits, fake_logits)
    g_loss = loss.generator(fake_logits)

For "minimax" and "non_saturating", D(x) = sigmoid(logit) and the logs are taken in stable form:
log D = log_sigmoid(l) = −softplus(−l), log(1 − D) = log_sigmoid(−l) = −softplus(l).
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Term = Callable[[jax.Array], jax.Array]


class AdversarialLoss(NamedTuple):
    """A named pair of losses to minimise: discriminator(real, fake, real_w, fake_w), generator(fake, w)."""

    name: str
    discriminator: Callable[..., jax.Array]
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
