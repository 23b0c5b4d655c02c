"""Discriminator-driven sampling: correct a generator's samples with its critic, D/(1 − D) ≈ π/p.

For a logistic discriminator trained to optimality, D*(x) = π(x)/(π(x) + p(x)) (π = data, p = generator),
so its logit l(x) = log D/(1 − D) = log π(x) − log p(x) is the log density ratio, and generator samples
reweighted by exp(l) follow π. Two samplers use it, both pure and jittable, randomness only through
explicit keys, fixed-size outputs:

* `rejection_sample` / `rejection_sample_n`: discriminator rejection sampling (Azadi et al. 2019):
  accept x ~ p with probability exp(l(x) − M), M ≥ max l (exact for M = sup l).
* `metropolis_hastings`: MH-GAN (Turner et al. 2019), an independence sampler with proposals from p:
  accept x′ over the current x with probability min(1, exp(l(x′) − l(x))).

Both need CALIBRATED logits of a critic near its optimum for the generator it corrects (`refit_critic`
trains one on alone against it): a Wasserstein, hinge or least-squares critic (or a logistic one that is
over-/under-confident) does not output log π/p. Fit a logistic head a·s + b on held-out real and fake
critic scores s first (`fit_calibration` / `calibrate`, Turner et al. Sec. 3.3), then sample with the
calibrated logits::

    logits = sampling.calibrate(critic(x_real_heldout), critic(x_fake_heldout), critic(x_fake))
    out = sampling.rejection_sample(key, x_fake, logits)
    x = out.samples[: out.count]          # or out.samples[out.valid]; inside jit keep the mask
"""

import functools
from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import optax

from gan_jax import losses

Proposal = Callable[[chex.PRNGKey], tuple[jax.Array, jax.Array]]


class Accepted(NamedTuple):
    """Fixed-size accepted samples: rows [0, count) are the accepted ones in input order, the rest zeros."""

    samples: jax.Array  # (n, *event)
    valid: jax.Array  # (n,) bool, = arange(n) < count: samples[valid] are the accepted ones
    count: jax.Array  # () int32


class Chains(NamedTuple):
    """Final states of independent MH chains, their logits and how many proposals each accepted."""

    samples: jax.Array  # (n_chains, *event)
    logits: jax.Array  # (n_chains,)
    accepted: jax.Array  # (n_chains,) int32; 0: the chain never left its initial state


class Calibration(NamedTuple):
    """Logistic head on critic scores s: calibrated logit = scale·s + shift ≈ log π/p; call it on scores."""

    scale: jax.Array  # () a
    shift: jax.Array  # () b

    def __call__(self, scores: jax.Array) -> jax.Array:
        """a·s + b, elementwise."""
        return self.scale * jnp.asarray(scores) + self.shift


# --------------------------------------------------------------------------------------------------
# Input checks (trace time: free under jit).


def _as_logits(logits: jax.Array, n: Optional[int], what: str, fix: str) -> jax.Array:
    """Logits (n,) or (n, 1) as a float vector (n,); ValueError naming the shape and the fix otherwise."""
    logits = jnp.asarray(logits)
    if not (logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)):
        raise ValueError(f"{what} has shape {logits.shape}; expected (n,) or (n, 1), one logit per sample. {fix}")
    if n is not None and logits.shape[0] != n:
        raise ValueError(f"{what} has shape {logits.shape} but there are {n} samples; {fix}")
    if logits.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {logits.shape}); give at least one sample.")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(jnp.float32)
    return logits.reshape(-1)


def _samples_and_logits(samples: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    samples = jnp.asarray(samples)
    if samples.ndim == 0:
        raise ValueError("samples is a scalar (shape ()); give a batch of samples, shape (n, *event).")
    fix = ("give one critic logit per generator sample, logits = critic(samples), shape (n,) or (n, 1); a critic "
           "that scores packs of m > 1 samples (PacGAN) gives no per-sample logit and cannot drive these samplers.")
    return samples, _as_logits(logits, samples.shape[0], "logits", fix)


def _log1mexp(x: jax.Array) -> jax.Array:
    """log(1 − exp(x)) for x < 0, stable at both ends (Mächler 2012)."""
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _log_acceptance(
    logits: jax.Array, max_logit: jax.Array, gamma: Optional[jax.Array], epsilon: jax.Array
) -> jax.Array:
    """log P(accept): min(0, l − M), or log σ(F) with F = d − log(1 − exp(d − ε)) − γ, d = min(l − M, 0)."""
    d = jnp.minimum(logits - max_logit, 0.0)
    if gamma is None:
        return d
    return jax.nn.log_sigmoid(d - _log1mexp(d - epsilon) - gamma)


# --------------------------------------------------------------------------------------------------
# Discriminator rejection sampling (Azadi et al. 2019).


@jax.jit
def rejection_sample(
    key: chex.PRNGKey,
    samples: jax.Array,
    logits: jax.Array,
    max_logit: Optional[jax.Array] = None,
    gamma: Optional[jax.Array] = None,
    epsilon: jax.Array = 1e-6,
) -> Accepted:
    """Keep x ~ p with probability min(1, exp(l(x) − M)), M = max_logit or max l: the kept x follow π ∝ p·e^l.

    Args:
      key: PRNG key for the uniforms.
      samples: generator samples x ~ p, shape (n, *event).
      logits: calibrated critic logits l(x) ≈ log π(x)/p(x), shape (n,) or (n, 1).
      max_logit: M, an upper bound on l over the support of p. Exact when M ≥ sup l; samples with
        l > M are accepted with probability 1 (under-represented). Default: the batch maximum, as
        Azadi et al.'s burn-in estimate (slightly biased for small batches; pass a bound to avoid it).
      gamma: None for the exact rule above. A number selects Azadi et al.'s practical variant: accept
        with probability σ(F), F = d − log(1 − exp(d − ε)) − γ, d = l − M, which equals exp(d) at γ = 0
        (ε → 0); γ > 0 accepts fewer, γ < 0 more, trading exactness for acceptance rate (the paper sets
        γ to a percentile of F over a burn-in batch, e.g. `jnp.percentile(F, 95)`).
      epsilon: ε of the γ-variant, keeps log(1 − exp(d − ε)) finite at d = 0.

    Returns:
      `Accepted`: fixed-size samples with the accepted ones first (rows ≥ count are zeros), the mask
      `valid` over those rows and `count`. The acceptance rate is count/n ≈ E_p[e^(l−M)] = e^(−M) for
      calibrated logits, so about n·e^(−M) survive; `rejection_sample_n` loops until n are accepted.
    """
    samples, logits = _samples_and_logits(samples, logits)
    bound = jnp.max(logits) if max_logit is None else jnp.asarray(max_logit, logits.dtype)
    log_p = _log_acceptance(logits, bound, gamma, jnp.asarray(epsilon, logits.dtype))
    accept = jnp.log(jax.random.uniform(key, logits.shape, logits.dtype)) < log_p
    return _accepted_first(samples, accept)


def _accepted_first(samples: jax.Array, accept: jax.Array) -> Accepted:
    """Stable partition: accepted rows first (input order), the other rows zeroed."""
    order = jnp.argsort(~accept, stable=True)
    return _first_rows(samples[order], jnp.sum(accept, dtype=jnp.int32))


def _first_rows(rows: jax.Array, count: jax.Array) -> Accepted:
    """`Accepted` holding rows[:count], the rows from `count` on zeroed."""
    n = rows.shape[0]
    valid = jnp.arange(n) < count
    kept = jnp.where(valid.reshape((n,) + (1,) * (rows.ndim - 1)), rows, 0)
    return Accepted(kept.astype(rows.dtype), valid, count)


@functools.partial(jax.jit, static_argnames=("propose", "n", "max_rounds"))
def rejection_sample_n(
    key: chex.PRNGKey,
    propose: Proposal,
    n: int,
    max_logit: Optional[jax.Array] = None,
    max_rounds: int = 100,
    gamma: Optional[jax.Array] = None,
    epsilon: jax.Array = 1e-6,
) -> Accepted:
    """n samples of π ∝ p·e^l by `rejection_sample` on fresh batches (x, l(x)) = propose(key) until n are kept.

    Args:
      key: PRNG key; round r proposes with `fold_in(key, r)` and accepts with an independent split.
      propose: pure function key ↦ (samples (B, *event), logits (B,)), e.g. generator samples and their
        calibrated critic logits; the same B every call. Must be hashable (it is a static argument).
      n: number of accepted samples wanted.
      max_logit: M for every round. Default: the maximum logit of the first batch (a burn-in
        estimate, fixed afterwards so that all rounds accept by the same rule).
      max_rounds: at most this many batches; if fewer than n were accepted by then, count < n.
      gamma, epsilon: as in `rejection_sample`.

    Returns:
      `Accepted` with n rows: count = min(n, accepted) — check `count == n` (or `valid.all()`).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, the number of samples wanted; got {n!r}.")
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds must be a positive int, the most batches to propose; got {max_rounds!r}.")

    def one_round(r):
        propose_key, accept_key = jax.random.split(jax.random.fold_in(key, r))
        samples, logits = _samples_and_logits(*propose(propose_key))
        return accept_key, samples, logits

    accept_key, samples, logits = one_round(0)
    batch = samples.shape[0]
    bound = jnp.max(logits) if max_logit is None else jnp.asarray(max_logit, logits.dtype)
    first = rejection_sample(accept_key, samples, logits, bound, gamma, epsilon)
    # Room for one whole batch past n: an update at offset count ≤ n − 1 never runs off the end.
    buffer = jnp.zeros((n + batch,) + samples.shape[1:], samples.dtype)
    buffer = jax.lax.dynamic_update_slice_in_dim(buffer, first.samples, 0, axis=0)

    def not_done(carry):
        r, count, _ = carry
        return (count < n) & (r < max_rounds)

    def step(carry):
        r, count, buffer = carry
        accept_key, samples, logits = one_round(r)
        if samples.shape[0] != batch:
            raise ValueError(
                f"propose returned {samples.shape[0]} samples after {batch}; return the same batch size B."
            )
        out = rejection_sample(accept_key, samples, logits, bound, gamma, epsilon)
        # Rows past the accepted ones are zeros; the next round overwrites them from its own offset.
        buffer = jax.lax.dynamic_update_slice_in_dim(buffer, out.samples, count, axis=0)
        return r + 1, count + out.count, buffer

    _, count, buffer = jax.lax.while_loop(not_done, step, (jnp.int32(1), first.count, buffer))
    return _first_rows(buffer[:n], jnp.minimum(count, n))


# --------------------------------------------------------------------------------------------------
# Metropolis–Hastings GAN (Turner et al. 2019).


@functools.partial(jax.jit, static_argnames=("n_chains",))
def metropolis_hastings(
    key: chex.PRNGKey,
    samples: jax.Array,
    logits: jax.Array,
    n_chains: int,
    init_samples: Optional[jax.Array] = None,
    init_logits: Optional[jax.Array] = None,
) -> Chains:
    """Independence MH with proposals x′ ~ p and target π: accept with min(1, exp(l(x′) − l(x))).

    The ratio is (D(x)⁻¹ − 1)/(D(x′)⁻¹ − 1) = [π(x′)/p(x′)]/[π(x)/p(x)] for D = σ(l) (MH-GAN). With
    w = π/p ≤ W, each chain's final state is within total variation (1 − 1/W)^K of π after K proposals.

    Args:
      key: PRNG key for the uniforms.
      samples: generator samples, shape (n, *event), n = K·n_chains (K steps per chain): sample i is
        step i // n_chains of chain i % n_chains (rows of `samples.reshape(K, n_chains, *event)`).
      logits: calibrated critic logits l ≈ log π/p of the samples, shape (n,) or (n, 1).
      n_chains: number of independent chains (static).
      init_samples, init_logits: optional initial states (n_chains, *event) and their logits
        (n_chains,), e.g. held-out real data as in Turner et al. (no burn-in). Default: each chain
        starts at its first sample and proposes the remaining K − 1. A chain that accepts nothing
        (`accepted == 0`) ends where it started — with real-data starts, Turner et al. then rerun it
        from a generator sample.

    Returns:
      `Chains`: final state, its logit, and accepted-proposal count of each chain.
    """
    samples, logits = _samples_and_logits(samples, logits)
    if not isinstance(n_chains, int) or n_chains < 1:
        raise ValueError(f"n_chains must be a positive int; got {n_chains!r}.")
    n = samples.shape[0]
    if n % n_chains:
        raise ValueError(
            f"{n} samples do not split into {n_chains} chains of equal length; give n = K·n_chains samples "
            f"(e.g. {(n // n_chains) * n_chains} or {(n // n_chains + 1) * n_chains})."
        )
    event = samples.shape[1:]
    proposals = samples.reshape((n // n_chains, n_chains) + event)
    proposal_logits = logits.reshape(n // n_chains, n_chains)
    if (init_samples is None) != (init_logits is None):
        raise ValueError("give both init_samples and init_logits (initial states and their logits), or neither.")
    if init_samples is None:
        if proposals.shape[0] < 2:
            raise ValueError(
                f"{n} samples for {n_chains} chains leave no proposal after each chain's first sample; "
                f"give at least 2·n_chains = {2 * n_chains} samples, or init_samples/init_logits."
            )
        state, state_logits = proposals[0], proposal_logits[0]
        proposals, proposal_logits = proposals[1:], proposal_logits[1:]
    else:
        state = jnp.asarray(init_samples)
        if state.shape != (n_chains,) + event:
            raise ValueError(
                f"init_samples has shape {state.shape}; expected (n_chains, *event) = {(n_chains,) + event}, "
                "one initial state per chain shaped like the samples."
            )
        state = state.astype(samples.dtype)
        fix = "give one logit per initial state, init_logits = critic(init_samples)."
        state_logits = _as_logits(init_logits, n_chains, "init_logits", fix).astype(logits.dtype)

    log_u = jnp.log(jax.random.uniform(key, proposal_logits.shape, logits.dtype))
    expand = (slice(None),) + (None,) * len(event)

    def step(carry, xs):
        x, l, accepted = carry
        x_new, l_new, log_u = xs
        accept = log_u < l_new - l  # u < min(1, exp(l′ − l))
        x = jnp.where(accept[expand], x_new, x)
        return (x, jnp.where(accept, l_new, l), accepted + accept), None

    init = (state, state_logits, jnp.zeros(n_chains, jnp.int32))
    (x, l, accepted), _ = jax.lax.scan(step, init, (proposals, proposal_logits, log_u))
    return Chains(x, l, accepted)


# --------------------------------------------------------------------------------------------------
# Calibration of a critic's scores into logits ≈ log π/p.


@functools.partial(jax.jit, static_argnames=("steps", "l2"))
def fit_calibration(real_scores: jax.Array, fake_scores: jax.Array, steps: int = 50, l2: float = 1e-6) -> Calibration:
    """(a, b) = argmin E_real softplus(−(a·s + b)) + E_fake softplus(a·s + b): class-balanced logistic regression.

    Fit on HELD-OUT critic scores s of real data and of generator samples (not the critic's training
    batches, on which it is over-confident). Balancing the two means makes a·s + b estimate
    log π(s)/p(s) whatever the two sample sizes. Any critic works — Wasserstein, hinge and
    least-squares critics output scores, not log ratios, and MUST be calibrated before
    `rejection_sample`/`metropolis_hastings`; a logistic critic usually benefits too.

    Args:
      real_scores, fake_scores: critic outputs, shapes (n_real,) / (n_real, 1) and (n_fake,) / (n_fake, 1).
      steps: damped Newton steps (the objective is convex in (a, b); ~10 usually suffice).
      l2: ridge ½·l2·a² on the slope for standardised scores, keeps (a, b) finite when real and fake
        scores are perfectly separable (then the critic's scores carry no usable ratio: expect a large a).

    Returns:
      `Calibration(scale=a, shift=b)`; `calibration(scores)` gives the calibrated logits.
    """
    fix = "give the critic's outputs on held-out {} samples, one score per sample."
    real = _as_logits(real_scores, None, "real_scores", fix.format("real"))
    fake = _as_logits(fake_scores, None, "fake_scores", fix.format("generator"))
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (Newton steps); got {steps!r}.")
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0 (ridge on the slope); got {l2!r}.")
    dtype = jnp.result_type(real.dtype, fake.dtype)
    real, fake = real.astype(dtype), fake.astype(dtype)
    # Standardise the pooled scores (conditioning: critic scores may be of any scale), fit, map back.
    pooled = jnp.concatenate([real, fake])
    mean, std = jnp.mean(pooled), jnp.std(pooled)
    std = jnp.where(std > 0, std, 1.0)
    real, fake = (real - mean) / std, (fake - mean) / std
    bce = losses.get("minimax").critic  # E_real softplus(−l) + E_fake softplus(l)

    def objective(theta):
        return bce(theta[0] * real + theta[1], theta[0] * fake + theta[1]) + 0.5 * l2 * theta[0] ** 2

    # Damped Newton: the best of the step lengths 1, ½, …, 2⁻¹⁵ and 0, so the objective never increases.
    lengths = jnp.concatenate([2.0 ** -jnp.arange(16, dtype=dtype), jnp.zeros(1, dtype)])

    def newton(_, theta):
        grad = jax.grad(objective)(theta)
        hess = jax.hessian(objective)(theta) + 1e-12 * jnp.eye(2, dtype=dtype)
        direction = -jnp.linalg.solve(hess, grad)
        candidates = theta + lengths[:, None] * direction
        values = jax.vmap(objective)(candidates)
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        return candidates[jnp.argmin(values)]

    a, b = jax.lax.fori_loop(0, steps, newton, jnp.zeros(2, dtype))
    return Calibration(scale=a / std, shift=b - a * mean / std)


def refit_critic(
    key: chex.PRNGKey,
    critic: Callable[[chex.ArrayTree, jax.Array], jax.Array],
    params: chex.ArrayTree,
    real: Callable[[chex.PRNGKey, int], jax.Array],
    fake: Callable[[chex.PRNGKey, int], jax.Array],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    cosine: bool = True,
) -> chex.ArrayTree:
    """`params` after `steps` Adam(β = (0.5, 0.999)) steps on E_π softplus(−l) + E_p softplus(l), l = critic(params, x).

    At that loss's optimum l(x) = log π(x)/p(x), the logit the samplers need: a critic trained with a penalty, or
    against a generator that has moved on since, is trained on alone against the generator it will correct.
    `real(key, n)` / `fake(key, n)` draw n data / generator samples (a fresh batch per step, keys from `key`);
    with `cosine` the rate decays to 0 on a cosine over the steps (a less noisy final critic). Traceable: call it
    inside `jax.jit`, with `critic`, `real` and `fake` closed over.
    """
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive ints; got {steps!r}, {batch_size!r}.")
    rate = optax.cosine_decay_schedule(learning_rate, steps) if cosine else learning_rate
    opt = optax.adam(rate, b1=0.5, b2=0.999)
    bce = losses.get("minimax").critic

    def step(carry, k):
        params, opt_state = carry
        k_real, k_fake = jax.random.split(k)
        x_real, x_fake = real(k_real, batch_size), fake(k_fake, batch_size)
        grads = jax.grad(lambda p: bce(critic(p, x_real), critic(p, x_fake)))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params


@functools.partial(jax.jit, static_argnames=("steps", "l2"))
def calibrate(
    real_scores: jax.Array, fake_scores: jax.Array, scores: jax.Array, steps: int = 50, l2: float = 1e-6
) -> jax.Array:
    """Calibrated logits a·s + b ≈ log π/p of `scores`, (a, b) from `fit_calibration(real_scores, fake_scores)`."""
    return fit_calibration(real_scores, fake_scores, steps=steps, l2=l2)(jnp.asarray(scores))
