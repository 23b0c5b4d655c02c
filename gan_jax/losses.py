"""Adversarial losses on critic outputs (logits): public functions, and one registry to choose them by name.

Every loss is a pair of functions to MINIMISE, each a weighted mean over examples of a per-example term::

    hinge_critic_loss(real_logits, fake_logits)       # the critic's loss
    hinge_generator_loss(fake_logits)                  # the generator's loss
    loss = gan_jax.losses.get("hinge")                 # the same pair by name: AdversarialLoss(name, critic, generator)
    loss.critic(real_logits, fake_logits), loss.generator(fake_logits)

Logits have shape (n,) or (n, 1), one per example. Weights: a critic loss takes optional `real_weights` and
`fake_weights`, a generator loss `weights`, each of shape (), (n,) or (n, 1); every expectation E_w[t] is
then the weighted mean Σ wᵢ·tᵢ / Σ wᵢ of its side (the plain mean without weights, 0 where all wᵢ = 0), so
a scalar weight changes nothing and a zero weight removes an example (and its gradient).

For the minimax and non-saturating losses, D(x) = sigmoid(logit) and the logs are taken in stable form:
log D = log_sigmoid(l) = −softplus(−l), log(1 − D) = log_sigmoid(−l) = −softplus(l).

The f-GAN family ("fgan_kl", "fgan_reverse_kl", "fgan_js", "fgan_pearson", "fgan_squared_hellinger";
Nowozin, Cseke & Tomioka 2016) estimates D_f(P‖Q) = E_Q[f(dP/dQ)] = sup_T E_P[T] − E_Q[f*(T)], P = data,
Q = generator. The critic's raw output v is mapped into dom f* by the output activation T = g_f(v)
inside the loss (so any critic works), see `F_DIVERGENCES`. At the optimum T*(x) = f′(p(x)/q(x)) and
the critic loss equals −D_f(P‖Q). One pair of functions, `fgan_critic_loss` and `fgan_generator_loss`,
serves all five, with the divergence as an argument.
"""

import functools
import math
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from gan_jax.registry import Registry

Term = Callable[[jax.Array], jax.Array]
Weights = Optional[jax.Array]


class AdversarialLoss(NamedTuple):
    """A named pair of losses to minimise: critic(real, fake, real_weights, fake_weights), generator(fake, weights)."""

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


def _side(term: Term, logits: jax.Array, weights: Weights, logits_name: str, weights_name: str) -> jax.Array:
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


def _critic_loss(
    real_term: Term, fake_term: Term, real_logits: jax.Array, fake_logits: jax.Array, real_weights: Weights,
    fake_weights: Weights,
) -> jax.Array:
    """L_C = E_w[real_term(l_real)] + E_w[fake_term(l_fake)]."""
    real = _side(real_term, real_logits, real_weights, "real_logits", "real_weights")
    return real + _side(fake_term, fake_logits, fake_weights, "fake_logits", "fake_weights")


def _generator_loss(fake_term: Term, fake_logits: jax.Array, weights: Weights) -> jax.Array:
    """L_G = E_w[fake_term(l_fake)]."""
    return _side(fake_term, fake_logits, weights, "fake_logits", "weights")


# --------------------------------------------------------------------------------------------------
# The GAN, Wasserstein, hinge and least-squares losses.


def minimax_critic_loss(
    real_logits: jax.Array, fake_logits: jax.Array, real_weights: Weights = None, fake_weights: Weights = None
) -> jax.Array:
    """L_C = E_real[softplus(−l)] + E_fake[softplus(l)] = −E log D(x) − E log(1 − D(G(z))), D = sigmoid(l).

    The binary cross-entropy (logistic) critic loss of the GAN (Goodfellow et al. 2014), shared by the
    minimax and the non-saturating GAN (`non_saturating_critic_loss` is this function); at its optimum
    the logit is log(p_data/p_model).
    Weights: real_weights, fake_weights (optional, one per example) make E_real, E_fake weighted means Σwᵢtᵢ/Σwᵢ.

    >>> round(float(minimax_critic_loss(jnp.array([0.0]), jnp.array([0.0]))), 4)  # D = ½: 2·log 2
    1.3863
    """
    return _critic_loss(
        lambda l: jax.nn.softplus(-l), jax.nn.softplus, real_logits, fake_logits, real_weights, fake_weights
    )


non_saturating_critic_loss = minimax_critic_loss  # Goodfellow et al. change only the generator's loss.


def minimax_generator_loss(fake_logits: jax.Array, weights: Weights = None) -> jax.Array:
    """L_G = E_fake[log_sigmoid(−l)] = E log(1 − D(G(z))): the saturating minimax generator loss.

    The generator's side of min_G max_D V(G, D) (Goodfellow et al. 2014). Its gradient −D(G(z)) vanishes
    where the critic confidently rejects the fakes (l → −∞); see `non_saturating_generator_loss`.
    Weights: `weights` (optional, one per example) makes E_fake the weighted mean Σwᵢtᵢ/Σwᵢ.

    >>> round(float(minimax_generator_loss(jnp.array([0.0]))), 4)  # log(1 − ½) = −log 2
    -0.6931
    """
    return _generator_loss(lambda l: jax.nn.log_sigmoid(-l), fake_logits, weights)


def non_saturating_generator_loss(fake_logits: jax.Array, weights: Weights = None) -> jax.Array:
    """L_G = E_fake[softplus(−l)] = −E log D(G(z)): the non-saturating generator loss.

    Goodfellow et al. (2014)'s alternative to the minimax generator loss, with the same fixed point and a
    gradient −(1 − D(G(z))) that stays near −1 where the critic rejects the fakes.
    Weights: `weights` (optional, one per example) makes E_fake the weighted mean Σwᵢtᵢ/Σwᵢ.

    >>> round(float(non_saturating_generator_loss(jnp.array([0.0]))), 4)  # −log ½ = log 2
    0.6931
    """
    return _generator_loss(lambda l: jax.nn.softplus(-l), fake_logits, weights)


def wasserstein_critic_loss(
    real_logits: jax.Array, fake_logits: jax.Array, real_weights: Weights = None, fake_weights: Weights = None
) -> jax.Array:
    """L_C = E_fake[f] − E_real[f]: the WGAN critic loss, −(a Kantorovich–Rubinstein estimate of W1).

    Arjovsky, Chintala & Bottou (2017). The critic f must be kept (about) 1-Lipschitz by the caller: weight
    clipping or a gradient penalty (`gan_jax.penalties`).
    Weights: real_weights, fake_weights (optional, one per example) make E_real, E_fake weighted means Σwᵢtᵢ/Σwᵢ.

    >>> float(wasserstein_critic_loss(jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0])))  # −1 − 2
    -3.0
    """
    return _critic_loss(lambda l: -l, lambda l: l, real_logits, fake_logits, real_weights, fake_weights)


def wasserstein_generator_loss(fake_logits: jax.Array, weights: Weights = None) -> jax.Array:
    """L_G = −E_fake[f]: the generator loss of the WGAN and of the hinge GAN (`hinge_generator_loss`).

    Arjovsky, Chintala & Bottou (2017); Lim & Ye (2017) and Miyato et al. (2018) use it with the hinge
    critic loss.
    Weights: `weights` (optional, one per example) makes E_fake the weighted mean Σwᵢtᵢ/Σwᵢ, e.g.
    −(1·1 + 0·2 + 3·3)/(1 + 0 + 3):

    >>> float(wasserstein_generator_loss(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 3.0])))
    -2.5
    """
    return _generator_loss(lambda l: -l, fake_logits, weights)


def hinge_critic_loss(
    real_logits: jax.Array, fake_logits: jax.Array, real_weights: Weights = None, fake_weights: Weights = None
) -> jax.Array:
    """L_C = E_real[relu(1 − f)] + E_fake[relu(1 + f)]: the hinge critic loss (margin 1).

    Lim & Ye (2017, Geometric GAN); Miyato et al. (2018, SN-GAN). Samples beyond the margin (f ≥ 1 on real,
    f ≤ −1 on fake) add nothing.
    Weights: real_weights, fake_weights (optional, one per example) make E_real, E_fake weighted means Σwᵢtᵢ/Σwᵢ.

    >>> float(hinge_critic_loss(jnp.array([2.0]), jnp.array([-2.0])))  # both beyond the margin
    0.0
    >>> float(hinge_critic_loss(jnp.array([0.5, 2.0]), jnp.array([-2.0, 0.0])))  # (0.5 + 0)/2 + (0 + 1)/2
    0.75
    """
    return _critic_loss(
        lambda l: jax.nn.relu(1.0 - l), lambda l: jax.nn.relu(1.0 + l), real_logits, fake_logits, real_weights,
        fake_weights,
    )


hinge_generator_loss = wasserstein_generator_loss  # −E f(G(z)) (Lim & Ye 2017; Miyato et al. 2018).


def least_squares_critic_loss(
    real_logits: jax.Array, fake_logits: jax.Array, real_weights: Weights = None, fake_weights: Weights = None
) -> jax.Array:
    """L_C = E_real[½(f − 1)²] + E_fake[½f²]: the LSGAN critic loss with labels a = 0 (fake), b = 1 (real).

    Mao et al. (2017).
    Weights: real_weights, fake_weights (optional, one per example) make E_real, E_fake weighted means Σwᵢtᵢ/Σwᵢ.

    >>> float(least_squares_critic_loss(jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0])))  # (0 + 2)/2 + (0 + 2)/2
    2.0
    """
    return _critic_loss(
        lambda l: 0.5 * jnp.square(l - 1.0), lambda l: 0.5 * jnp.square(l), real_logits, fake_logits, real_weights,
        fake_weights,
    )


def least_squares_generator_loss(fake_logits: jax.Array, weights: Weights = None) -> jax.Array:
    """L_G = E_fake[½(f − 1)²]: the LSGAN generator loss with target c = 1.

    Mao et al. (2017).
    Weights: `weights` (optional, one per example) makes E_fake the weighted mean Σwᵢtᵢ/Σwᵢ.

    >>> float(least_squares_generator_loss(jnp.array([0.0, -2.0])))  # (½·1 + ½·9)/2
    2.5
    """
    return _generator_loss(lambda l: 0.5 * jnp.square(l - 1.0), fake_logits, weights)


def auxiliary_classifier_loss(class_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """L_AC = E[logsumexp(c) − c_y] = −E log softmax(c)_y: the auxiliary classifier's cross-entropy (ACGAN).

    Odena, Olah & Shlens (2017): the critic also predicts the class of what it scores, from `class_logits` c
    (n, K) and int labels y (n,); the critic minimises L_AC on real and fake samples, the generator on its fakes
    (both adding it to their adversarial loss with a weight, `loss.acgan_weight` in the engine).

    >>> round(float(auxiliary_classifier_loss(jnp.zeros((1, 4)), jnp.array([2]))), 4)  # uniform over 4: log 4
    1.3863
    """
    class_logits = jnp.asarray(class_logits)
    if class_logits.ndim != 2 or jnp.shape(labels) != class_logits.shape[:1]:
        raise ValueError(f"class_logits has shape {class_logits.shape} and labels {jnp.shape(labels)}; "
                         "expected (n, num_classes) and (n,)")
    log_probs = jax.nn.log_softmax(class_logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, jnp.asarray(labels)[:, None], axis=-1))


# --------------------------------------------------------------------------------------------------
# f-GAN (Nowozin, Cseke & Tomioka 2016).


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
    FDivergence("kl", f="u·log u", conjugate="exp(t − 1)", optimal_critic="1 + log u",
                activation=lambda v: v, activation_formula="v",
                conjugate_of_activation=lambda v: jnp.exp(v - 1.0)),
    # D_f = KL(Q‖P); f*(g(v)) = −1 − log(exp(−v)) = v − 1.
    FDivergence("reverse_kl", f="−log u", conjugate="−1 − log(−t), t < 0", optimal_critic="−1/u",
                activation=lambda v: -jnp.exp(-v), activation_formula="−exp(−v)",
                conjugate_of_activation=lambda v: v - 1.0),
    # D_f = 2·JSD(P, Q) = KL(P‖M) + KL(Q‖M), M = ½(P + Q); the GAN critic loss shifted by −2·log 2.
    # g(v) = log 2 + log_sigmoid(v) = log(2·D); f*(g(v)) = −log(2 − 2·sigmoid(v)) = softplus(v) − log 2.
    FDivergence("js", f="u·log u − (u + 1)·log((u + 1)/2)", conjugate="−log(2 − exp(t)), t < log 2",
                optimal_critic="log(2u/(u + 1))", activation=lambda v: _LOG2 - jax.nn.softplus(-v),
                activation_formula="log 2 − softplus(−v) = log 2 − log(1 + exp(−v))",
                conjugate_of_activation=lambda v: jax.nn.softplus(v) - _LOG2),
    # D_f = Pearson χ²(P‖Q) = Σ (p − q)²/q.
    FDivergence("pearson", f="(u − 1)²", conjugate="t²/4 + t", optimal_critic="2(u − 1)",
                activation=lambda v: v, activation_formula="v",
                conjugate_of_activation=lambda v: 0.25 * jnp.square(v) + v),
    # D_f = squared Hellinger Σ (√p − √q)² (no ½ factor); g(v) = 1 − exp(−v), f*(g(v)) = e^v − 1.
    FDivergence("squared_hellinger", f="(√u − 1)²", conjugate="t/(1 − t), t < 1", optimal_critic="1 − 1/√u",
                activation=lambda v: -jnp.expm1(-v), activation_formula="1 − exp(−v)",
                conjugate_of_activation=jnp.expm1),
)

_F_DIVERGENCES_BY_NAME: Registry[FDivergence] = Registry("f-divergence", {d.name: d for d in F_DIVERGENCES})


def _f_divergence(divergence: Union[str, FDivergence]) -> FDivergence:
    """An `FDivergence`, given as itself or by its name in `F_DIVERGENCES`."""
    return divergence if isinstance(divergence, FDivergence) else _F_DIVERGENCES_BY_NAME[divergence]


def fgan_critic_loss(
    real_logits: jax.Array,
    fake_logits: jax.Array,
    real_weights: Weights = None,
    fake_weights: Weights = None,
    *,
    divergence: Union[str, FDivergence],
) -> jax.Array:
    """L_C = E_real[−g_f(v)] + E_fake[f*(g_f(v))] ≥ −D_f(P‖Q): the f-GAN critic loss (Nowozin et al. 2016).

    `divergence`: an `FDivergence` or the name of one of `F_DIVERGENCES` ("kl", "reverse_kl", "js",
    "pearson", "squared_hellinger"); it gives the output activation g_f and f*(g_f(v)). The bound is tight
    at the optimal critic g_f(v*) = f′(p/q).
    Weights: real_weights, fake_weights (optional, one per example) make E_real, E_fake weighted means Σwᵢtᵢ/Σwᵢ.

    >>> float(fgan_critic_loss(jnp.array([2.0]), jnp.array([1.0]), divergence="kl"))  # −2 + exp(1 − 1)
    -1.0
    """
    div = _f_divergence(divergence)
    return _critic_loss(
        lambda v: -div.activation(v), div.conjugate_of_activation, real_logits, fake_logits, real_weights,
        fake_weights,
    )


def fgan_generator_loss(
    fake_logits: jax.Array, weights: Weights = None, *, divergence: Union[str, FDivergence]
) -> jax.Array:
    """L_G = −E_fake[g_f(v)]: the f-GAN generator loss in its non-saturating form (Nowozin et al. 2016, Sec. 3.2).

    The generator's saddle-point loss would be −E_Q[f*(g(v))]. Like the non-saturating GAN loss (which it
    is, up to a constant, for "js"), −E_Q[g(v)] keeps the stationary point (Nowozin et al. Sec. 3.2 show
    this with Goodfellow et al.'s argument and found it useful for all divergences) but does not saturate
    where the critic confidently rejects the fakes (v → −∞): there the saddle form's gradient vanishes for
    "js" (it is the saturating log(1 − D) + log 2), "kl" (exp(v − 1)) and "squared_hellinger" (exp(v)),
    while −g(v) keeps a gradient of order one (KL, JS, Pearson) or a growing one (reverse KL, Hellinger).
    `divergence` as in `fgan_critic_loss`.
    Weights: `weights` (optional, one per example) makes E_fake the weighted mean Σwᵢtᵢ/Σwᵢ.

    >>> float(fgan_generator_loss(jnp.array([3.0]), divergence="kl"))  # g(v) = v
    -3.0
    """
    div = _f_divergence(divergence)
    return _generator_loss(lambda v: -div.activation(v), fake_logits, weights)


def _bound(loss: Callable[..., jax.Array], divergence: FDivergence, doc: str) -> Callable[..., jax.Array]:
    """`loss` with divergence=`divergence` bound, documented by `doc`."""
    bound = functools.partial(loss, divergence=divergence)
    bound.__doc__ = f"{doc}\n\n`{loss.__name__}` with divergence={divergence.name!r} (Nowozin et al. 2016)."
    return bound


def _fgan(divergence: FDivergence) -> AdversarialLoss:
    """The registry entry "fgan_<name>": `fgan_critic_loss` and `fgan_generator_loss` for `divergence`."""
    g, conjugate = divergence.activation_formula, divergence.conjugate
    critic_doc = f"L_C = E_real[−g(v)] + E_fake[f*(g(v))], g(v) = {g}, f*(t) = {conjugate}."
    return AdversarialLoss(
        f"fgan_{divergence.name}",
        _bound(fgan_critic_loss, divergence, critic_doc),
        _bound(fgan_generator_loss, divergence, f"L_G = −E_fake[g(v)], g(v) = {g}."),
    )


# --------------------------------------------------------------------------------------------------
# The registry.

LOSSES: Registry[AdversarialLoss] = Registry("adversarial loss", {loss.name: loss for loss in (
    AdversarialLoss("minimax", minimax_critic_loss, minimax_generator_loss),
    AdversarialLoss("non_saturating", non_saturating_critic_loss, non_saturating_generator_loss),
    AdversarialLoss("wasserstein", wasserstein_critic_loss, wasserstein_generator_loss),
    AdversarialLoss("hinge", hinge_critic_loss, hinge_generator_loss),
    AdversarialLoss("least_squares", least_squares_critic_loss, least_squares_generator_loss),
    *map(_fgan, F_DIVERGENCES),
)})
get = LOSSES.get  # get(name) -> AdversarialLoss; ValueError "unknown adversarial loss 'x'; valid names: ..."
names = LOSSES.names  # names() -> the registered names, in the order above
