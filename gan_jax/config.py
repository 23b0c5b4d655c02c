"""The experiment configuration: one `ml_collections.ConfigDict` schema, its defaults and its validation.

Every experiment config in `experiments/configs/` starts from `base_config()` and changes fields; the
engine reads only these fields. `validate` turns a bad value into one `GanJaxError` naming the field, the
value and what is allowed, before anything is compiled or written.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

import ml_collections

from gan_jax.errors import GanJaxError
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
    "augment.ada",  # ADA's p in the state
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
    cfg.model.kind = "mlp"  # "mlp" | "conv" | "dcgan" | "resnet" | "biggan" (gan_jax.models.KINDS)
    cfg.model.latent_dim = 2
    cfg.model.width = 512
    cfg.model.depth = 3
    cfg.model.activation = "relu"
    cfg.model.base_width = 64
    cfg.model.spectral_norm = False
    cfg.model.batch_norm = False  # in the critic
    cfg.model.generator_batch_norm = False  # in the mlp/conv generator (the image kinds' always have it)
    # dcgan/resnet/biggan: channel multipliers of the generator and critic (layer widths are multiples of them, per
    # image size: gan_jax/models/{dcgan,resnet,biggan}.py); 0 = the published ones (dcgan 64, resnet 64, biggan 96).
    cfg.model.g_channels = 0
    cfg.model.d_channels = 0
    # resnet/biggan: self-attention after the G and D blocks of this output side (-1 = the kind's default: none for
    # resnet, half the image side for biggan; 0 = none), with attention_heads heads (8·heads must divide the width).
    cfg.model.attention_resolution = -1
    cfg.model.attention_heads = 1
    # biggan: the shared class embedding's dimension (0 = one-hot labels) and hierarchical latents (latent_dim
    # split into one chunk per generator block plus one).
    cfg.model.shared_embedding_dim = 128
    cfg.model.hierarchical_latent = True
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
    # λ over generator steps (gan_jax.optimizers.SCHEDULES, the optim sections' fields): "constant" = λ
    # throughout; e.g. "step" with boundaries (9000,) and decay_factor 0.1: λ/10 from generator step 9000 on.
    cfg.loss.penalty_schedule = ml_collections.ConfigDict(
        dict(schedule="constant", boundaries=(), decay_factor=0.1, decay_steps=0, alpha=0.0))
    cfg.loss.clip_value = 0.0  # > 0: WGAN weight clipping of the critic to [-c, c]
    cfg.loss.n_critic = 5  # critic updates per generator update
    cfg.loss.unroll_steps = 0  # unrolled GAN (Metz et al. 2016): k differentiable critic updates
    # PacGAN (Lin et al. 2018): the critic scores packs of m samples of one kind concatenated along the last
    # axis ((B, d) -> (B/m, m·d); images along channels). 1 = off; must divide the (per-device) batch.
    cfg.loss.pack = 1
    # ACGAN (Odena et al. 2017): λ > 0 adds an auxiliary classifier on the critic's features, trained on the
    # labels of reals and fakes: critic += λ·(CE(real) + CE(fake)), generator += λ·CE(fake). Needs
    # model.num_classes > 0. 0 = off.
    cfg.loss.acgan_weight = 0.0

    # Differentiable augmentation (gan_jax.augment) of every image the critic scores, reals and fakes, in the
    # critic and the generator updates; the penalties are taken on the augmented images (GP interpolates
    # augmented reals and fakes, R1/R2 the augmented reals/fakes).
    cfg.augment = ml_collections.ConfigDict()
    # Comma-separated gan_jax.augment.OPS names, applied in order; "" = none. DiffAugment (Zhao et al. 2020):
    # "color,translation,cutout" (augment.DIFFAUGMENT). ADA's 'bc' pipeline, with ada=True: augment.ADA_BC =
    # "xflip,rotate90,xint,brightness,contrast,lumaflip,hue,saturation".
    cfg.augment.policy = ""
    # ADA (Karras et al. 2020): each op applied per example with probability p, p in the state (from ada_p),
    # moved every ada_interval generator steps by sign(r_t - ada_target)·(real images the critic saw in the
    # interval)/(ada_kimg·1000), r_t = E[sign(critic(augmented real))] over the interval; clipped to [0, 1].
    cfg.augment.ada = False
    cfg.augment.ada_p = 0.0  # p at step 0 (StyleGAN2-ADA starts at 0; its --p)
    cfg.augment.ada_target = 0.6
    cfg.augment.ada_interval = 4
    cfg.augment.ada_kimg = 500.0  # thousands of real images for p to move by 1 (StyleGAN2-ADA's default)

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
        # step share its rate): "constant" | "step" (× decay_factor at each of `boundaries`) | "cosine" or "linear"
        # (from learning_rate to alpha·learning_rate over decay_steps, then constant). gan_jax.optimizers.SCHEDULES.
        opt.schedule = "constant"
        opt.boundaries = ()  # step: increasing generator steps, e.g. (2250,)
        opt.decay_factor = 0.1  # step
        opt.decay_steps = 0  # cosine, linear: > 0
        opt.alpha = 0.0  # cosine, linear
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
    # jax 0.10), "eigen_ynn_reductions" (the same with YNNPACK's reductions: the image-scale configs, whose batch
    # norm it speeds up) or "xla_default" (this jaxlib's default, YNNPACK fusions in 0.10). No effect on GPU/TPU.
    cfg.train.cpu_matmuls = DEFAULT_CPU_MATMULS
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 1000
    cfg.train.max_to_keep = 3
    cfg.train.sample_every = 1000  # PNG of samples; 0 = only at the end
    cfg.train.eval_every = 0  # metrics of eval_samples samples into metrics.jsonl; 0 = only at the end
    cfg.train.eval_samples = 2500  # generated in eval.batch_size batches (gan_jax.scoring), never all at once

    # Metrics over features (gan_jax.scoring, gan_jax.evaluation): when train.eval_every / the end of training.
    cfg.eval = ml_collections.ConfigDict()
    cfg.eval.metrics = ""  # comma-separated among fid, kid, is, pr, dc; "" = all the extractor supports; "none"
    cfg.eval.extractor = "auto"  # inception | classifier | points | auto (gan_jax.extractors)
    cfg.eval.inception_weights = ""  # pt_inception-2015-12-05-6726825d.pth; "" = $GAN_JAX_INCEPTION_WEIGHTS
    cfg.eval.batch_size = 500  # samples generated and featurised at a time
    cfg.eval.reference_split = ""  # the real data's split compared with ("" = data.split), e.g. "test"
    cfg.eval.kid_subsets = 100  # torch-fidelity's defaults
    cfg.eval.kid_subset_size = 0  # 0 = min(1000, samples)
    cfg.eval.is_splits = 10
    cfg.eval.pr_k = 3  # Kynkäänniemi et al. 2019
    cfg.eval.dc_k = 5  # Naeem et al. 2020
    cfg.eval.knn_samples = 10_000  # precision/recall/density/coverage use the first this many of each side
    cfg.eval.best_metric = ""  # e.g. "classifier/fd": the best step by it is kept in workdir/best/ ("" = off)

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


def _validate_eval(e: ml_collections.ConfigDict) -> None:
    """config.eval's names and counts (the registries are imported here: they import this module)."""
    from gan_jax import evaluation, extractors

    if e.extractor != "auto":
        lookup(extractors.EXTRACTORS.get, "eval.extractor", e.extractor)
    spec = str(e.metrics).strip()
    if spec not in ("", "none"):
        for name in spec.split(","):
            lookup(evaluation.METRICS.get, "eval.metrics", name.strip())
    for field, low in (("batch_size", 1), ("kid_subsets", 1), ("kid_subset_size", 0), ("is_splits", 1),
                       ("pr_k", 1), ("dc_k", 1), ("knn_samples", 2)):
        if int(e[field]) < low:
            _fail(f"eval.{field}", e[field], f"must be an integer >= {low}")


def _validate_augment(cfg: ml_collections.ConfigDict) -> None:
    """config.augment's policy names and ADA settings, and loss.acgan_weight (GanJaxError naming the field); that
    the policy suits the data and ACGAN a conditional model is checked by the engine."""
    import math

    from gan_jax import augment  # light: jax only
    from gan_jax.errors import GanJaxError

    a = cfg.augment
    try:
        augment.parse_policy(a.policy)
    except GanJaxError as err:
        raise GanJaxError(f"config.augment.policy: {err}") from None
    checks = (("ada_target", 0 <= a.ada_target <= 1, "must be in [0, 1] (the target of E[sign critic(real)])"),
              ("ada_p", 0 <= a.ada_p <= 1, "must be in [0, 1] (a probability)"),
              ("ada_interval", isinstance(a.ada_interval, int) and a.ada_interval >= 1, "must be an integer >= 1"),
              ("ada_kimg", a.ada_kimg > 0, "must be a number > 0 (thousands of images for p to move by 1)"))
    for field, ok, allowed in checks:
        if not ok:  # False for NaN
            raise GanJaxError(f"config.augment.{field}={a[field]!r} is invalid: {allowed}")
    if a.ada and not augment.parse_policy(a.policy):
        raise GanJaxError(f"config.augment.ada=True has no ops to apply: set augment.policy, e.g. {augment.ADA_BC!r}")
    weight = cfg.loss.get("acgan_weight", 0.0)
    if not (math.isfinite(weight) and weight >= 0):
        raise GanJaxError(f"config.loss.acgan_weight={weight!r} is invalid: must be a finite number >= 0 (0 = off)")


def _fail(field: str, value: Any, allowed: str) -> None:
    raise GanJaxError(f"config.{field}={value!r} is invalid: {allowed}")


def lookup(get: Callable[[Any], T], field: str, name: Any) -> T:
    """get(name) for the name held by config `field`; a GanJaxError raised again as "config.{field}: {error}".

    With `get` a Registry's: "config.optim.critic.name: unknown optimizer 'adamw2'; valid names: adam, ...".
    """
    try:
        return get(name)
    except GanJaxError as err:
        raise GanJaxError(f"config.{field}: {err}") from None


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks values that do not depend on other modules' registries; raises GanJaxError naming the field."""
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
    for field, low, meaning in (("g_channels", 0, "0 = the published width"),
                                ("d_channels", 0, "0 = the published width"),
                                ("attention_resolution", -1, "-1 = the kind's default, 0 = none"),
                                ("attention_heads", 1, "heads of the self-attention"),
                                ("shared_embedding_dim", 0, "0 = one-hot labels")):
        value = cfg.model.get(field, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            _fail(f"model.{field}", value, f"must be an integer >= {low} ({meaning})")
    if not 2 <= t.eval_samples <= 10_000_000:
        _fail("train.eval_samples", t.eval_samples, "must be in [2, 10,000,000] (they are generated in "
              "eval.batch_size batches; covariances need >= 2)")
    _validate_eval(cfg.eval)
    if cfg.data.batch_size <= 0:
        _fail("data.batch_size", cfg.data.batch_size, "must be a positive integer")
    if cfg.loss.n_critic < 1:
        _fail("loss.n_critic", cfg.loss.n_critic, "must be >= 1")
    if cfg.loss.unroll_steps < 0:
        _fail("loss.unroll_steps", cfg.loss.unroll_steps, "must be >= 0 (0 = no unrolling)")
    finite_at_least("loss.penalty_weight", cfg.loss.penalty_weight, 0, "must be a finite number >= 0")
    finite_at_least("loss.clip_value", cfg.loss.clip_value, 0, "must be a finite number >= 0 (0 = no clipping)")
    _validate_augment(cfg)
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


def set_fields(cfg: ml_collections.ConfigDict, fields: dict[str, Any]) -> None:
    """cfg's fields set by dotted name; a name the config lacks is a ValueError (ConfigDict.update_from_flattened_dict
    would add a misspelt leaf silently)."""
    unknown = sorted(key for key in fields if key not in flatten(cfg.to_dict()))
    if unknown:
        raise ValueError(f"config overrides {unknown}: the config has no such field")
    cfg.update_from_flattened_dict(dict(fields))


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


def config_from_dict(saved: dict) -> ml_collections.ConfigDict:
    """The ConfigDict of a saved config (e.g. a workdir's config.json), fields it predates at their defaults."""
    return ml_collections.ConfigDict(with_defaults(saved))


def structural_differences(saved: dict, current: dict) -> list[str]:
    """Dotted keys under STRUCTURAL_KEYS whose values differ between two config dicts, as 'key: old -> new'
    (fields the saved config predates count at their defaults: `with_defaults`)."""
    saved = with_defaults(saved)

    old, new = flatten(saved), flatten(current)
    keys = sorted(k for k in set(old) | set(new)
                  if any(k == s or k.startswith(s + ".") for s in STRUCTURAL_KEYS))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in keys if old.get(k, "<absent>") != new.get(k, "<absent>")]
