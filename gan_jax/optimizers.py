"""Optimizers and learning-rate schedules of `config.optim.<role>`, built from optax by name.

- `OPTIMIZERS`: name → optax constructor. The config fields passed to it are the keywords its signature
  takes (`inspect.signature`): optax.adam gets b1 and b2, optax.rmsprop and optax.sgd neither. A field it
  does not take, set away from its default in `config.base_config()`, is an error naming the field, the
  optimizer and what it takes: ignoring it would train another optimizer than the one configured. Adding
  an optimizer is one line, e.g. `"adamw": optax.adamw` (a config may then set weight_decay).
- `SCHEDULES`: name → `Schedule`, a value over generator steps t from its base value: the learning rate η(t) of
  each `optim` section, and the gradient penalty's weight λ(t) (`loss.penalty_schedule`, `penalty_weight_schedule`).
- Updates that are differentiated (the unrolled GAN differentiates its critic updates) must be smooth at
  ν = 0, where optax's √ν has an infinite derivative: the keywords of `_DIFFERENTIABLE` (eps_root: √(ν + 1e-8)
  for the Adam family; eps_in_sqrt: RMSprop's ε inside the root) are set from `differentiable`, never from
  the config.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import ml_collections
import optax

from gan_jax import config as config_lib
from gan_jax import penalties
from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer", {
    "adam": optax.adam,
    "rmsprop": optax.rmsprop,
    "sgd": optax.sgd,
})

# Optimizer keywords set from `differentiable` (smooth updates at zero gradients), by the engine only.
# Not differentiable, RMSprop divides by √ν + ε (eps_in_sqrt=False); Adam takes eps_root = 0, its default.
_DIFFERENTIABLE: dict[str, Callable[[bool], Any]] = {
    "eps_root": lambda differentiable: 1e-8 if differentiable else 0.0,
    "eps_in_sqrt": lambda differentiable: differentiable,
}
# Fields every optimizer section has besides the optimizer's keywords and the schedule's fields.
_SECTION_FIELDS = ("name", "learning_rate", "schedule")


class Schedule(NamedTuple):
    """A schedule v(t) of a base value v: the config fields it reads, and its builder."""

    fields: tuple[str, ...]
    build: Callable[[ml_collections.ConfigDict, str, float], optax.Schedule]  # (section, path, v) -> v(t); checks fields


def _invalid(path: str, field: str, value: Any, allowed: str) -> GanJaxError:
    return GanJaxError(f"config.{path}.{field}={value!r} is invalid{allowed}")


def _constant(opt_cfg: ml_collections.ConfigDict, path: str, base: float) -> optax.Schedule:
    """v_t = v."""
    del opt_cfg, path
    return optax.constant_schedule(base)


def _step(opt_cfg: ml_collections.ConfigDict, path: str, base: float) -> optax.Schedule:
    """v_t = v · decay_factor^#{b ∈ boundaries : t ≥ b}."""
    boundaries = [int(b) for b in opt_cfg.boundaries]
    if not boundaries or boundaries[0] < 1 or any(a >= b for a, b in zip(boundaries, boundaries[1:])):
        raise _invalid(path, "boundaries", tuple(opt_cfg.boundaries),
                       " for schedule='step': must be increasing generator steps >= 1, at least one")
    if not opt_cfg.decay_factor >= 0:
        raise _invalid(path, "decay_factor", opt_cfg.decay_factor, ": must be >= 0")
    return optax.piecewise_constant_schedule(base, {b: opt_cfg.decay_factor for b in boundaries})


def _decay(opt_cfg: ml_collections.ConfigDict, path: str, schedule: str) -> tuple[int, float]:
    """(T, α) = (decay_steps, alpha) of a decaying schedule, checked: T ≥ 1 generator steps, α ∈ [0, 1]."""
    if not (isinstance(opt_cfg.decay_steps, int) and opt_cfg.decay_steps >= 1):
        raise _invalid(path, "decay_steps", opt_cfg.decay_steps,
                       f" for schedule={schedule!r}: must be a positive number of generator steps")
    if not 0.0 <= opt_cfg.alpha <= 1.0:
        raise _invalid(path, "alpha", opt_cfg.alpha, ": must be in [0, 1]")
    return opt_cfg.decay_steps, opt_cfg.alpha


def _cosine(opt_cfg: ml_collections.ConfigDict, path: str, base: float) -> optax.Schedule:
    """v_t = v · (α + (1 − α)·½(1 + cos(π·min(t, T)/T))), T = decay_steps, α = alpha."""
    steps, alpha = _decay(opt_cfg, path, "cosine")
    return optax.cosine_decay_schedule(base, steps, alpha)


def _linear(opt_cfg: ml_collections.ConfigDict, path: str, base: float) -> optax.Schedule:
    """v_t = v · (1 − (1 − α)·min(t, T)/T), T = decay_steps, α = alpha (Mimicry's "linear" decay: α = 0, T = all)."""
    steps, alpha = _decay(opt_cfg, path, "linear")
    return optax.linear_schedule(base, alpha * base, steps)


SCHEDULES: Registry[Schedule] = Registry("schedule", {
    "constant": Schedule((), _constant),
    "step": Schedule(("boundaries", "decay_factor"), _step),
    "cosine": Schedule(("decay_steps", "alpha"), _cosine),
    "linear": Schedule(("decay_steps", "alpha"), _linear),
})


def keywords_taken(name: str) -> tuple[str, ...]:
    """The keywords of optimizer `name` a config may set: its optax signature's, less learning_rate and
    the ones set from `differentiable`."""
    parameters = inspect.signature(OPTIMIZERS[name]).parameters
    return tuple(p for p in parameters if p != "learning_rate" and p not in _DIFFERENTIABLE)


def _same(a: Any, b: Any) -> bool:
    """a == b, a list equal to a tuple (a config read back from JSON holds lists)."""
    normal = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v
    return normal(a) == normal(b)


def _check_unread(path: str, field: str, value: Any, defaults: ml_collections.ConfigDict, reader: str) -> None:
    """GanJaxError for config.<path>.<field>, which `reader` does not read, unless it holds its base-config default
    (a field the base config lacks is always an error)."""
    if field in defaults and _same(value, defaults[field]):
        return
    advice = f"leave it at its default {defaults[field]!r}" if field in defaults else "remove it"
    raise GanJaxError(f"config.{path}.{field}={value!r} is not used by {reader}; {advice}")


def optimizer_keywords(opt_cfg: ml_collections.ConfigDict, path: str = "optim") -> dict[str, Any]:
    """{field: opt_cfg[field]} for the fields optimizer `opt_cfg.name` takes (`keywords_taken`); GanJaxError naming
    the field for any field that neither it nor the schedule reads, set away from its base-config default."""
    name, schedule = opt_cfg.name, opt_cfg.get("schedule", "constant")
    taken = config_lib.lookup(keywords_taken, f"{path}.name", name)
    reads = config_lib.lookup(SCHEDULES.get, f"{path}.schedule", schedule).fields
    defaults = config_lib.base_config().optim.generator
    keywords = {}
    for field, value in opt_cfg.items():
        if field in _SECTION_FIELDS or field in reads:
            continue
        if field in _DIFFERENTIABLE:
            raise GanJaxError(f"config.{path}.{field} cannot be set: the engine sets it (smooth updates when "
                              "loss.unroll_steps > 0 differentiates them)")
        if field in taken:
            keywords[field] = value
        else:
            _check_unread(path, field, value, defaults, (
                f"optimizer {name!r} with schedule {schedule!r} (optax.{getattr(OPTIMIZERS[name], '__name__', name)} "
                f"takes: {', '.join(('learning_rate', *taken))}; schedule {schedule!r} reads: "
                f"{', '.join(reads) or 'learning_rate only'})"))
    return keywords


def learning_rate_schedule(opt_cfg: ml_collections.ConfigDict, path: str = "optim") -> optax.Schedule:
    """η(t), t = generator step: SCHEDULES[opt_cfg.schedule] ("constant" when unset); GanJaxError naming a bad
    field."""
    schedule = opt_cfg.get("schedule", "constant")
    return config_lib.lookup(SCHEDULES.get, f"{path}.schedule", schedule).build(opt_cfg, path, opt_cfg.learning_rate)


def penalty_weight_schedule(loss_cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """λ(t) = SCHEDULES[loss.penalty_schedule.schedule] of λ = loss.penalty_weight at generator step t;
    GanJaxError naming a field the schedule does not read, set away from its default."""
    path = "loss.penalty_schedule"
    section = loss_cfg.get("penalty_schedule") or ml_collections.ConfigDict()  # absent from configs saved before it existed
    name = section.get("schedule", "constant")
    schedule = config_lib.lookup(SCHEDULES.get, f"{path}.schedule", name)
    defaults = config_lib.base_config().loss.penalty_schedule
    for field, value in section.items():
        if field != "schedule" and field not in schedule.fields:
            _check_unread(path, field, value, defaults,
                          f"schedule {name!r} (it reads: {', '.join(schedule.fields) or 'penalty_weight only'})")
    return schedule.build(section, path, loss_cfg.penalty_weight)


def make_optimizer(opt_cfg: ml_collections.ConfigDict, clip_value: float = 0.0, differentiable: bool = False,
                   *, updates_per_step: int = 1, path: str = "optim") -> optax.GradientTransformation:
    """OPTIMIZERS[opt_cfg.name](η(⌊count / updates_per_step⌋), **optimizer_keywords), then weight clipping
    to [−c, c] when c = clip_value > 0.

    `updates_per_step` (n_critic for the critic) makes the schedule count generator steps: all updates of
    one generator step use that step's rate. A constant schedule passes the float learning rate (the
    optimizer state then holds no step count). `differentiable=True` makes the update smooth at zero
    gradients, so it can be differentiated through. `path` names the config section in error messages.
    """
    optimizer = config_lib.lookup(OPTIMIZERS.get, f"{path}.name", opt_cfg.name)
    schedule = learning_rate_schedule(opt_cfg, path)
    keywords = optimizer_keywords(opt_cfg, path)
    if opt_cfg.get("schedule", "constant") == "constant":
        learning_rate = opt_cfg.learning_rate
    elif updates_per_step == 1:
        learning_rate = schedule
    else:
        learning_rate = lambda count: schedule(count // updates_per_step)
    parameters = inspect.signature(optimizer).parameters
    keywords.update({k: value(differentiable) for k, value in _DIFFERENTIABLE.items() if k in parameters})
    opt = optimizer(learning_rate, **keywords)
    return optax.chain(opt, penalties.clip_weights(clip_value)) if clip_value > 0 else opt
