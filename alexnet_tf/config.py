"""Owns the training configuration: one frozen dataclass whose defaults are the paper's recipe.

    python -m alexnet_tf.train --data_dir=/data/imagenet --model_dir=/runs/alexnet

trains the paper's recipe (Krizhevsky et al. 2012; docs/paper.md): global batch 128, SGD with
momentum 0.9, L2 weight decay 5e-4 inside the gradient, learning rate 0.01 (scaled
linearly with the global batch) divided by 10 when validation top-1 stops improving, at
most 3 times, 90 epochs. That is about 6 days on one 2012 GPU and a few hours on 8 modern
ones. `demo_config()` is the shrunk recipe behind `--demo` (about 3-3.5 minutes on 2 CPU cores).

Every flag of `alexnet_tf.train` takes its default from a field here.
"""

import dataclasses
import json
import os
import re
from typing import Optional

# The paper's learning rate belongs to a batch of 128; other global batches scale it linearly
# (Goyal et al. 2017), so `learning_rate` is always quoted at this batch.
REFERENCE_BATCH = 128
# The chief writes the run's TrainConfig to <model_dir>/config.json at its first start; a
# resumed run logs what differs from it (training.loop).
CONFIG_FILENAME = "config.json"

VARIANTS = ("paper", "one_weird_trick", "caffe")  # alexnet_tf.model.VARIANTS (a test keeps them equal)
LR_SCHEDULES = ("paper", "step", "cosine")
INPUT_CONVENTIONS = ("paper", "torchvision")
WEIGHT_INITS = ("variant", "normal", "pytorch")
# 255 x torchvision's per-channel std (0.229, 0.224, 0.225): how much larger this project's
# mean-subtracted 0-255 pixels are than torchvision's normalised ones. A network of ReLUs, max
# pools and zero biases (one_weird_trick with PyTorch's initialisation) scales its logits by this
# factor and, while they are small, every layer's gradient relative to its weights by at least it
# (docs/training.md, "Recipes").
PIXEL_SCALE_VS_TORCHVISION = 57.6
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
DISTRIBUTIONS = ("auto", "mirrored", "multi_worker", "none")
TRAINABLE = ("all", "fc", "head")  # alexnet_tf.model.TRAINABLE_LAYERS (a test keeps them equal)
DEFAULT_DEMO_CACHE_DIR = os.path.join("~", ".cache", "alexnet_tf", "demo")
MIN_ONE_WEIRD_TRICK_SIZE = 95  # the smallest input whose pool5 map is at least 2x2
# A tf.data service dispatcher: grpc://HOST:PORT (HOST a name, an IPv4 address or [IPv6]).
_SERVICE_ADDRESS = re.compile(r"grpc://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


class ConfigError(ValueError):
    """Bad user input (flags, data dir, model dir): reported as one line, exit status 2."""


def parse_service_address(address, flag="--data_service"):
    """(host, port) of a tf.data service dispatcher written grpc://HOST:PORT; ConfigError naming `flag`."""
    match = _SERVICE_ADDRESS.fullmatch(address or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(
            f"{flag}={address!r} is not a dispatcher address: write grpc://HOST:PORT, e.g. grpc://10.0.0.5:5050"
        )
    return match.group(1).strip("[]"), int(match.group(2))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `alexnet_tf.train.run` needs. Defaults: the paper's recipe on ImageNet."""

    # Data.
    data_dir: str = ""
    data_source: str = "tfrecord"  # a key of alexnet_tf.data.sources.SOURCES: tfrecord | tfds | synthetic
    train_pattern: str = "train-*"  # shard globs inside data_dir (tfrecord source)
    eval_pattern: str = "validation-*"
    label_offset: Optional[int] = None  # None: from manifest.json / labels.txt
    num_classes: Optional[int] = None  # None: from the labels file (else 1000); checked against it
    image_size: int = 224
    augment: str = "paper"  # paper (random 224 of the 256 square + flip + PCA light) | inception
    lighting_std: float = 0.1  # stddev of the paper's PCA lighting alpha; 0 turns it off
    # paper: RGB in [0, 255] minus the mean pixel, as the model sees it; torchvision: the model
    # starts with an InputConversion layer to RGB / 255 normalised by ImageNet's mean and std
    # (it still takes the same pixels, so evaluation, export and serving need nothing new).
    input_convention: str = "paper"
    skip_corrupt: bool = False
    steps_per_epoch: Optional[int] = None  # None: training examples // global batch
    eval_steps: Optional[int] = None  # global batches; None: the whole validation set
    # grpc://HOST:PORT of a tf.data service dispatcher: its workers read, decode and crop the
    # training images (docs/distributed.md, "Feeding fast accelerators"); evaluation stays local.
    data_service: Optional[str] = None
    data_service_wait_s: float = 60.0  # how long to wait for the dispatcher to accept connections
    # How long a train step may wait for its batches while the dispatcher does not answer
    # before the run stops (with a checkpoint where one is correct: training.watchdog).
    data_service_timeout_s: float = 300.0

    # Recipe: the name of the set of defaults the run started from (RECIPES); every field it
    # sets is also a flag that overrides it. Recorded in config.json like every field.
    recipe: str = "paper"

    # Model.
    variant: str = "paper"
    dropout_rate: float = 0.5
    hidden_bias: Optional[float] = None  # None: the paper's 1.0 (Caffe used 0.1)
    weight_init_stddev: float = 0.01  # the paper's N(0, 0.01) kernels
    # variant: the variant's own (paper, caffe: N(0, weight_init_stddev); one_weird_trick:
    # PyTorch's) | normal: N(0, weight_init_stddev) | pytorch: U(+-1/sqrt(fan_in)), PyTorch's default
    weight_init: str = "variant"

    # Fine-tuning.
    init_from: Optional[str] = None  # .keras file, checkpoint or model dir whose weights start the run
    trainable: str = "all"  # all | fc (fc6-fc8) | head (fc8): the other layers are frozen
    head_lr_multiplier: float = 1.0  # fc8's learning rate / the others' (Caffe's fine-tuning: 10)

    # Optimisation.
    epochs: int = 90
    train_steps: Optional[int] = None  # overrides epochs when set
    batch_size: int = 128  # global, split over replicas
    learning_rate: float = 0.01  # at a global batch of REFERENCE_BATCH; scaled linearly
    lr_schedule: str = "paper"  # paper: /10 on a validation plateau | step | cosine
    lr_decay_epochs: tuple[float, ...] = (30.0, 60.0, 80.0)  # "step" boundaries
    lr_decay_factor: float = 0.1
    plateau_patience: int = 5  # epochs without a new best validation top-1 before a drop
    max_lr_drops: int = 3  # the paper divided the learning rate three times
    warmup_epochs: float = 0.0  # linear warm-up from 0, for any schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decoupled_weight_decay: bool = False  # False: L2 in the gradient, as the paper
    # > 0: an exponential moving average of the trainable weights, updated after every step
    # (average <- d * average + (1 - d) * weights), is what validation, results and the export
    # use; 0 (the paper): none. 0.99 averages about the last 100 steps.
    ema_decay: float = 0.0

    # Execution.
    precision: str = "auto"  # auto: mixed_bfloat16 where the hardware has bf16, else float32
    distribution: str = "auto"
    steps_per_execution: int = 1
    jit_compile: bool = False  # XLA is slower than the default kernels for AlexNet on CPU
    seed: Optional[int] = None
    deterministic: bool = False  # op determinism + fixed seeds (slower)

    # Outputs.
    model_dir: str = ""
    export_dir: Optional[str] = None  # None: <model_dir>/export
    # False (--noexport): no SavedModel at the end, for sweeps and for jobs that export later
    # with `python -m alexnet_tf.export --checkpoint=<model_dir>`; results.json says so.
    export: bool = True
    checkpoint_every_steps: int = 1000  # also at every epoch end
    keep_checkpoints: int = 3
    log_every_steps: int = 100
    ten_crop_eval: bool = False  # also evaluate with the paper's ten crops after training
    histograms: bool = False  # weight histograms every epoch
    # Validation images whose Grad-CAM overlays (conv5, the predicted class) TensorBoard shows at
    # every epoch end, taken once from the start of the validation data; 0: none. Display only:
    # a re-run may change it.
    gradcam_images: int = 4
    profile_steps: Optional[tuple[int, int]] = None  # (first, last) step of a profiler trace

    # Demo.
    demo: bool = False  # build the synthetic demo dataset in demo_cache_dir and train on it
    demo_cache_dir: str = DEFAULT_DEMO_CACHE_DIR

    @property
    def kernel_init(self):
        """The kernel initialisation the model gets: "normal" or "pytorch" (`weight_init` resolved)."""
        if self.weight_init != "variant":
            return self.weight_init
        return "pytorch" if self.variant == "one_weird_trick" else "normal"

    def warnings(self, from_weights=None):
        """One line for each setting known to train badly (the trainer logs them at the start).

        `from_weights`: the run began from --init_from's weights (None: whether init_from is set).

        - one_weird_trick initialised as PyTorch does, trained from scratch on this project's
          0-255 pixels: every step is at least PIXEL_SCALE_VS_TORCHVISION times larger relative to
          the weights than with torchvision's input, and rates that train there diverge here.
        - `--lr_schedule=paper` with too few epochs to lower the rate even once.
        """
        found = []
        if (
            self.variant == "one_weird_trick"
            and self.kernel_init == "pytorch"
            and self.input_convention == "paper"
            and not (bool(self.init_from) if from_weights is None else from_weights)
        ):
            found.append(
                "one_weird_trick with PyTorch's initialisation on this project's 0-255 pixels "
                f"(--input_convention=paper) takes steps at least {PIXEL_SCALE_VS_TORCHVISION:.0f}x "
                "larger relative to its weights than the same --learning_rate on normalised input, "
                "and rates that train with --recipe=torchvision diverge (0.04 at batch 128 did): "
                "use --recipe=torchvision (docs/training.md#recipes)"
            )
        patience = self.plateau_patience
        if self.lr_schedule == "paper" and not self.train_steps and self.epochs <= patience:
            found.append(
                f"--epochs={self.epochs} is too short for --lr_schedule=paper to lower the learning rate "
                f"even once (it waits for {patience} epochs without a new best validation top-1, "
                "--plateau_patience): the run ends at its full rate; --lr_schedule=cosine ends near 0"
            )
        elif self.lr_schedule == "paper" and not self.train_steps and self.epochs < 3 * (patience + 1):
            found.append(
                f"with --epochs={self.epochs}, --lr_schedule=paper lowers the learning rate only after "
                f"{patience} epochs without a new best validation top-1, and never while accuracy still "
                "climbs, so a short run usually ends at its full rate; --lr_schedule=cosine ends near 0"
            )
        return found

    @property
    def scaled_learning_rate(self):
        """The learning rate at the actual global batch (lr * batch / 128)."""
        return self.learning_rate * self.batch_size / REFERENCE_BATCH

    def validate(self):
        """Raises ConfigError naming the first bad field; checks only what needs no I/O.

        The data source's fields (its name, its data dir, --data_service) are checked by the
        source the trainer builds from them (alexnet_tf.training.inputs.data_source).
        """
        choices = {
            "variant": VARIANTS,
            "lr_schedule": LR_SCHEDULES,
            "precision": PRECISIONS,
            "distribution": DISTRIBUTIONS,
            "augment": ("paper", "inception"),
            "recipe": tuple(RECIPES),
            "input_convention": INPUT_CONVENTIONS,
            "weight_init": WEIGHT_INITS,
            "trainable": TRAINABLE,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        positive = (
            "epochs",
            "batch_size",
            "steps_per_execution",
            "checkpoint_every_steps",
            "keep_checkpoints",
            "log_every_steps",
            "image_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_steps", "steps_per_epoch", "eval_steps", "num_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 when set, got {value}")
        if not self.learning_rate > 0:  # also NaN
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.plateau_patience < 1 or self.max_lr_drops < 0:
            raise ConfigError(
                f"plateau_patience must be >= 1 and max_lr_drops >= 0, got {self.plateau_patience} "
                f"and {self.max_lr_drops}"
            )
        if not self.head_lr_multiplier > 0:
            raise ConfigError(f"head_lr_multiplier must be > 0, got {self.head_lr_multiplier}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                f"ema_decay must be in [0, 1) (0: no weight averaging; 0.99 averages about the last "
                f"100 steps), got {self.ema_decay}"
            )
        if self.gradcam_images < 0:
            raise ConfigError(
                f"gradcam_images must be >= 0 (0: no Grad-CAM images), got {self.gradcam_images}"
            )
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.weight_init_stddev <= 0:
            raise ConfigError("weight_decay and warmup_epochs must be >= 0, weight_init_stddev > 0")
        if not self.lighting_std >= 0:
            raise ConfigError(
                f"lighting_std must be >= 0 (0 turns the PCA lighting off), got {self.lighting_std}"
            )
        if self.variant != "one_weird_trick" and self.image_size < 224:
            raise ConfigError(f"the {self.variant} variant needs image_size >= 224, got {self.image_size}")
        # Below 95 pixels pool5 is 1x1, and Keras' adaptive pooling cannot stretch it to 6x6 in a graph.
        if self.variant == "one_weird_trick" and self.image_size < MIN_ONE_WEIRD_TRICK_SIZE:
            raise ConfigError(
                f"the one_weird_trick variant needs image_size >= {MIN_ONE_WEIRD_TRICK_SIZE}, "
                f"got {self.image_size}"
            )
        if not self.demo and not self.model_dir:
            raise ConfigError("--model_dir is required (where checkpoints, logs and the export go)")
        if self.data_service is not None:
            parse_service_address(self.data_service)
        if self.data_service_wait_s < 0:
            raise ConfigError(f"data_service_wait_s must be >= 0, got {self.data_service_wait_s}")
        if not self.data_service_timeout_s > 0:
            raise ConfigError(f"data_service_timeout_s must be > 0, got {self.data_service_timeout_s}")
        if self.profile_steps is not None and (
            len(self.profile_steps) != 2 or not 0 < self.profile_steps[0] <= self.profile_steps[1]
        ):
            raise ConfigError(f"profile_steps must be two steps 0 < first <= last, got {self.profile_steps}")


# The recipes `--recipe` names: TrainConfig values that replace the defaults (the paper's).
RECIPES = {
    "paper": {},
    # torchvision's reference recipe (references/classification in pytorch/vision; its AlexNet
    # command: --lr 0.01 on 8 GPUs x 32 images, momentum 0.9, weight decay 1e-4, StepLR x0.1
    # every 30 epochs, 90 epochs, RandomResizedCrop(224) + flip, Normalize(mean, std)), with
    # PyTorch's default initialisation. Its learning rate, 0.01 per 256 images, is 0.005 at the
    # REFERENCE_BATCH of 128 and scales linearly from there like every learning rate here.
    # Differences that remain: biases start at 0 (PyTorch draws them like the weights) and
    # weight decay skips biases, as in the paper's recipe.
    "torchvision": {
        "input_convention": "torchvision",
        "weight_init": "pytorch",
        "hidden_bias": 0.0,
        "augment": "inception",
        "lighting_std": 0.0,
        "learning_rate": 0.005,
        "lr_schedule": "step",
        "lr_decay_epochs": (30.0, 60.0),
        "lr_decay_factor": 0.1,
        "weight_decay": 1e-4,
    },
}


def recipe_config(recipe="paper", **overrides):
    """The TrainConfig of `--recipe=recipe`: the recipe's values, then `overrides` (TrainConfig fields).

    The library's twin of the flag: `TrainConfig(recipe="torchvision")` alone only names it.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"recipe={recipe!r}; choose one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[recipe], "recipe": recipe, **overrides})


PATH_FIELDS = ("data_dir", "model_dir", "export_dir", "init_from", "demo_cache_dir")


def config_json(config):
    """The TrainConfig as a JSON-ready dict (tuples become lists): what <model_dir>/config.json holds.

    Local paths are made absolute, so that a resume from another working directory, or with
    the same folder spelled another way, is not taken for a changed flag.
    """
    values = json.loads(json.dumps(dataclasses.asdict(config)))
    for name in PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and value and "://" not in value:
            values[name] = os.path.abspath(value)
    return values


def config_differences(stored, config):
    """`--name=value (config.json: stored value)` for each field of `config` that differs from `stored`.

    `stored` is a dict read from config.json; fields it lacks (added to TrainConfig after it was
    written) and keys TrainConfig no longer has are left out.
    """
    current = config_json(config)
    return [
        f"--{name}={_flag_value(value)} (config.json: {_flag_value(stored[name])})"
        for name, value in current.items()
        if name in stored and stored[name] != value
    ]


def _flag_value(value):
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def demo_config(**overrides):
    """The `--demo` recipe: ten generated classes, small and fast enough for 2 CPU cores.

    About 3-3.5 minutes on 2 CPU cores in mixed_bfloat16 (7 epochs of the 1,000 training images,
    plus 20 s to generate the data the first time); validation top-1 (200 images, so each figure
    is good to a few points) ended at 90.5%, 85.5%, 58.5%, 88.5% and 92% with seeds 0-4 (chance:
    10%; seed 2 was still climbing from 26% after epoch 4; before the input pipeline drew each
    window's augmentation at once, the same seeds drew other crops and ended at 84.5%, 78%,
    90.5%, 93% and 95.5%). The paper's N(0, 0.01) initialisation leaves the loss near ln 10 for
    1-3 epochs, for a seed-dependent time, so the 7th epoch is there to give every seed room
    after learning starts: with 6 epochs seeds 0-3 ended at 46.5%, 74%, 83.5% and 82.5% (seed 0
    fell back from 32.5% to 23.5% in epoch 4), and doubling the learning rate instead did not
    fix seed 0 (50.5%; its loss jumped back up once it had started to fall). Differences from
    the paper, and why: a batch of 32 and 217 steps fit the time; no dropout, which on 1,000
    images delays learning past the demo's epochs (measured on an earlier 6-epoch version: with
    0.5, 73.5% and 28% for seeds 0 and 1); hidden biases of 0.1 (Caffe's choice) instead of 1; a
    cosine schedule with a 1-epoch warm-up ends at a small rate without waiting for a validation
    plateau; one checkpoint kept (each is ~0.46 GB: weights and momentum).

    Args:
      **overrides: TrainConfig fields that replace the demo values.

    Returns:
      A TrainConfig with demo=True.
    """
    values = dict(DEMO_VALUES)
    values.update(overrides)
    return TrainConfig(**values)


# What --demo changes from the defaults (demo_config's docstring says why).
DEMO_VALUES = dict(
    demo=True,
    batch_size=32,
    epochs=7,
    learning_rate=0.04,
    dropout_rate=0.0,
    hidden_bias=0.1,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    checkpoint_every_steps=100,
    keep_checkpoints=1,
    log_every_steps=10,
    seed=0,
)
