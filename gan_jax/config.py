"""The experiment configuration: one `ml_collections.ConfigDict` schema, its defaults and its validation.

Every experiment config in `experiments/configs/` starts from `base_config()` and changes fields; the
engine reads only these fields. `validate` turns a bad value into one `ValueError` naming the field, the
value and what is allowed, before anything is compiled or written.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

import ml_collections

from gan_jax.parallel import CPU_MATMULS, DEFAULT_CPU_MATMULS

T = TypeVar("T")

PIPELINES = ("auto", "device", "streamed")  # data.pipeline (gan_jax.data)
FAKE_LABELS = ("uniform", "data")  # data.fake_labels: uniform over the classes, or the data's label frequencies

# Fields whose change alters the shape of the saved state: resuming across a change of any of them fails.
STRUCTURAL_KEYS = (
    "data.name",
    "data.image_size",
    "model",
    "optim.generator.name",
    "optim.critic.name",
    "optim.generator.schedule",  # a schedule adds a step count to the optimizer state
    "optim.critic.schedule",
    "loss.clip_value",
    "loss.pack",  # the critic's input width
    "train.ema_decay",  # 0 = no EMA parameters in the state
)


def base_config() -> ml_collections.ConfigDict:
    """Defaults: ring of 8 Gaussians, MLP width 512 depth 3, WGAN-GP (λ = 0.1, n_critic = 5), Adam(1e-4, 0.5, 0.9)."""
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0

    cfg.data = ml_collections.ConfigDict()
    cfg.data.name = "ring8"  # a toy distribution name, "digits", or any tfds image dataset name
    cfg.data.kwargs = ml_collections.ConfigDict()  # toy parameters, e.g. radius, std
    cfg.data.batch_size = 256
    cfg.data.data_dir = ""  # tfds data_dir ("" = $GAN_JAX_DATA_DIR or ~/.cache/gan_jax/tensorflow_datasets)
    cfg.data.image_size = 0  # 0 = native size of the image dataset
    cfg.data.split = "train"
    # Input pipeline: "device" (the dataset in device memory, drawn inside the step), "streamed" (records read
    # on the host, each process its own rows, prefetched), "auto" (device when the dataset as held on a device,
    # uint8 pixels + int32 labels, fits device_budget_mb MiB; else streamed). Toys are always drawn on the device.
    cfg.data.pipeline = "auto"
    cfg.data.device_budget_mb = 1024.0
    cfg.data.read_threads = 8  # streamed: threads reading records
    cfg.data.prefetch = 2  # streamed: fused calls' batches read ahead of the step
    # Labels of the fakes of a class-conditional model: "uniform" over the classes or the data's frequencies.
    cfg.data.fake_labels = "uniform"

    cfg.model = ml_collections.ConfigDict()
    cfg.model.kind = "mlp"  # "mlp" | "conv"
    cfg.model.latent_dim = 2
    cfg.model.width = 512
    cfg.model.depth = 3
    cfg.model.activation = "relu"
    cfg.model.base_width = 64
    cfg.model.spectral_norm = False
    cfg.model.batch_norm = False  # in the critic
    cfg.model.generator_batch_norm = False  # in the generator (running statistics in TrainState.generator_state)
    # > 0: a class-conditional pair G(z, y), f(x, y) (label embedding in G, projection critic); it must equal
    # the number of classes of the data's labels.
    cfg.model.num_classes = 0
    # Compute dtype of the layers ("float32", "bfloat16", "float16"); parameters, optimizer states, losses
    # and penalties stay float32 (mixed precision for accelerators).
    cfg.model.dtype = "float32"

    cfg.loss = ml_collections.ConfigDict()
    cfg.loss.name = "wasserstein"  # see gan_jax.losses.names()
    cfg.loss.penalty = "gp"  # see gan_jax.penalties.names()
    cfg.loss.penalty_weight = 0.1
    cfg.loss.clip_value = 0.0  # > 0: WGAN weight clipping of the critic to [-c, c]
    cfg.loss.n_critic = 5  # critic updates per generator update
    cfg.loss.unroll_steps = 0  # unrolled GAN (Metz et al. 2016): k differentiable critic updates
    # PacGAN (Lin et al. 2018): the critic scores packs of m samples of one kind concatenated along the last
    # axis ((B, d) -> (B/m, m·d); images along channels). 1 = off; must divide the (per-device) batch.
    cfg.loss.pack = 1

    cfg.optim = ml_collections.ConfigDict()
    for role in ("generator", "critic"):
        opt = ml_collections.ConfigDict()
        opt.name = "adam"  # a name of gan_jax.optimizers.OPTIMIZERS: "adam" | "rmsprop" | "sgd"
        opt.learning_rate = 1e-4
        # Passed to the optimizers whose optax signature takes them (adam); changed with one that does not
        # (rmsprop, sgd), an error. A config may add any other keyword its optimizer takes (e.g. eps).
        opt.b1 = 0.5
        opt.b2 = 0.9
        # Learning rate over generator steps, for both roles (the critic's n_critic updates of one generator
        # step share its rate): "constant" | "step" (× decay_factor at each of `boundaries`) | "cosine" (from
        # learning_rate to alpha·learning_rate over decay_steps, then constant). gan_jax.optimizers.SCHEDULES.
        opt.schedule = "constant"
        opt.boundaries = ()  # step: increasing generator steps, e.g. (2250,)
        opt.decay_factor = 0.1  # step
        opt.decay_steps = 0  # cosine: > 0
        opt.alpha = 0.0  # cosine
        cfg.optim[role] = opt

    cfg.train = ml_collections.ConfigDict()
    cfg.train.steps = 2000  # generator updates
    cfg.train.steps_per_call = 10  # K generator steps fused into one jitted call
    # Generator EMA (Yazıcı et al. 2019): β of a debiased exponential moving average of the generator's
    # parameters, kept in the state; samples, figures and metrics use it (gan_jax.engine.sampling_params). 0 = off.
    cfg.train.ema_decay = 0.0
    # Unroll the n_critic (and unrolled-GAN) loops into straight-line code. XLA:CPU runs convolutions
    # inside a while loop 5-7x slower than outside one (measured, jax 0.10); costs compile time.
    cfg.train.unroll_loops = False
    # How XLA:CPU compiles matmuls: "eigen" (XLA's own dots; faster for these MLPs on CPU, measured with
    # jax 0.10) or "xla_default" (this jaxlib's default, YNNPACK fusions in 0.10). No effect on GPU/TPU.
    cfg.train.cpu_matmuls = DEFAULT_CPU_MATMULS
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 1000
    cfg.train.max_to_keep = 3
    cfg.train.sample_every = 1000  # PNG of samples; 0 = only at the end
    cfg.train.eval_every = 0  # metrics of eval_samples samples into metrics.jsonl; 0 = only at the end
    cfg.train.eval_samples = 2500

    cfg.parallel = ml_collections.ConfigDict()
    cfg.parallel.num_devices = 0  # 0 = all devices (of all processes)
    # Several processes (one per host): setting these three starts one (gan_jax.parallel.initialize_distributed).
    cfg.parallel.coordinator_address = ""  # HOST:PORT of process 0, e.g. "10.0.0.1:1234"
    cfg.parallel.num_processes = 0  # 0 = one process
    cfg.parallel.process_id = -1  # this process's rank, 0..num_processes-1
    # True with the three above unset: JAX_COORDINATOR_ADDRESS/_NUM_PROCESSES/_PROCESS_ID, else JAX's
    # cluster detection (Cloud TPU, SLURM).
    cfg.parallel.distributed = False
    cfg.parallel.init_timeout_s = 300  # give up (one error line, exit 2) if the processes have not met by then
    return cfg


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"config.{field}={value!r} is invalid: {allowed}")


def lookup(get: Callable[[Any], T], field: str, name: Any) -> T:
    """get(name) for the name held by config `field`; a ValueError raised again as "config.{field}: {error}".

    With `get` a Registry's: "config.optim.critic.name: unknown optimizer 'adamw2'; valid names: adam, ...".
    """
    try:
        return get(name)
    except ValueError as err:
        raise ValueError(f"config.{field}: {err}") from None


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks values that do not depend on other modules' registries; raises ValueError naming the field."""
    import math

    def numbers(node: Any, prefix: str = ""):
        for key, value in node.items():
            if isinstance(value, (ml_collections.ConfigDict, dict)):
                yield from numbers(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{prefix}{key}", value

    def finite_at_least(field: str, value: Any, low: float, allowed: str) -> None:
        if not (math.isfinite(value) and value >= low):
            _fail(field, value, allowed)

    t = cfg.train
    for field in ("steps", "steps_per_call", "log_every", "checkpoint_every", "max_to_keep"):
        if int(t[field]) <= 0:
            _fail(f"train.{field}", t[field], "must be a positive integer")
    if t.steps >= 2**31 - 1:
        _fail("train.steps", t.steps, f"must be < 2**31 - 1 = {2**31 - 1} (the step counter is int32)")
    for field in ("log_every", "checkpoint_every"):
        if t[field] % t.steps_per_call:
            _fail(f"train.{field}", t[field],
                  f"must be a multiple of train.steps_per_call={t.steps_per_call} "
                  "(logs and checkpoints happen between fused calls)")
    lookup(CPU_MATMULS.get, "train.cpu_matmuls", t.get("cpu_matmuls", DEFAULT_CPU_MATMULS))
    for field in ("sample_every", "eval_every"):
        if t.get(field, 0) < 0:
            _fail(f"train.{field}", t[field], "must be >= 0 (0 = only at the end)")
    d = cfg.data
    if d.get("pipeline", "auto") not in PIPELINES:
        _fail("data.pipeline", d.pipeline, f"must be one of {', '.join(PIPELINES)}")
    if d.get("fake_labels", "uniform") not in FAKE_LABELS:
        _fail("data.fake_labels", d.fake_labels, "must be 'uniform' or 'data' (the data's label frequencies)")
    finite_at_least("data.device_budget_mb", d.get("device_budget_mb", 0), 0, "must be a finite number >= 0")
    for field in ("read_threads", "prefetch"):
        if int(d.get(field, 1)) < 1:
            _fail(f"data.{field}", d[field], "must be an integer >= 1")
    if int(cfg.model.get("num_classes", 0)) < 0:
        _fail("model.num_classes", cfg.model.num_classes, "must be >= 0 (0 = unconditional)")
    # The evaluation generates all samples in one call; image metrics (Fréchet distance) need a covariance.
    images = cfg.model.kind == "conv"
    low, high = (2, 50_000) if images else (1, 1_000_000)
    if not low <= t.eval_samples <= high:
        _fail("train.eval_samples", t.eval_samples,
              f"must be in [{low}, {high:,}] for {'image' if images else 'toy'} data "
              f"({'the Fréchet distance needs >= 2 samples; ' if images else ''}all are generated and scored "
              "in one batch)")
    if cfg.data.batch_size <= 0:
        _fail("data.batch_size", cfg.data.batch_size, "must be a positive integer")
    if cfg.loss.n_critic < 1:
        _fail("loss.n_critic", cfg.loss.n_critic, "must be >= 1")
    if cfg.loss.unroll_steps < 0:
        _fail("loss.unroll_steps", cfg.loss.unroll_steps, "must be >= 0 (0 = no unrolling)")
    finite_at_least("loss.penalty_weight", cfg.loss.penalty_weight, 0, "must be a finite number >= 0")
    finite_at_least("loss.clip_value", cfg.loss.clip_value, 0, "must be a finite number >= 0 (0 = no clipping)")
    for role in ("generator", "critic"):
        opt = cfg.optim[role]
        lr = opt.learning_rate
        if not (math.isfinite(lr) and lr > 0):
            _fail(f"optim.{role}.learning_rate", lr, "must be a finite number > 0")
        for beta in ("b1", "b2"):
            value = opt.get(beta, 0.0)
            if not 0 <= value < 1:  # False for NaN
                _fail(f"optim.{role}.{beta}", value, "must be in [0, 1) (a moving-average decay)")
    if cfg.model.latent_dim <= 0:
        _fail("model.latent_dim", cfg.model.latent_dim, "must be a positive integer")
    for field, value in numbers(cfg):
        if isinstance(value, float) and math.isnan(value):
            _fail(field, value, "must be a number, not NaN")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {"dotted.key": value}."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def with_defaults(saved: dict) -> dict:
    """A saved config dict with the fields it lacks (added to `base_config` after it was written) at their
    defaults, so that a run written before a field existed reads as having had the default value."""

    def merge(defaults: dict, values: dict) -> dict:
        merged = dict(defaults)
        for key, value in values.items():
            both = isinstance(value, dict) and isinstance(defaults.get(key), dict)
            merged[key] = merge(defaults[key], value) if both else value
        return merged

    return merge(json.loads(base_config().to_json()), saved)


def structural_differences(saved: dict, current: dict) -> list[str]:
    """Dotted keys under STRUCTURAL_KEYS whose values differ between two config dicts, as 'key: old -> new'
    (fields the saved config predates count at their defaults: `with_defaults`)."""
    saved = with_defaults(saved)

    old, new = flatten(saved), flatten(current)
    keys = sorted(k for k in set(old) | set(new)
                  if any(k == s or k.startswith(s + ".") for s in STRUCTURAL_KEYS))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in keys if old.get(k, "<absent>") != new.get(k, "<absent>")]
