"""Trains AlexNet: the command `python -m alexnet_tf.train` and the library function `run`.

    python -m alexnet_tf.train --demo        # generated 10-class data, ~3-3.5 minutes on 2 CPU cores
    python -m alexnet_tf.train --data_dir=/data/imagenet --model_dir=/runs/alexnet

The defaults are the paper's recipe (see alexnet_tf/config.py). Every epoch ends with an
evaluation on the validation split and a checkpoint; checkpoints also come every
--checkpoint_every_steps. Re-running the same command resumes from the newest checkpoint;
SIGTERM writes one and exits with status 143, Ctrl-C exits with 130 (alexnet_tf/cli.py lists
every exit status). TensorBoard logs go to --model_dir and a SavedModel for TF Serving to
--export_dir (default <model_dir>/export/<version>), unless --noexport.
"""

import dataclasses
import os
import random
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

from alexnet_tf import cli, hardware
from alexnet_tf.config import (
    DEMO_VALUES,
    DISTRIBUTIONS,
    INPUT_CONVENTIONS,
    LR_SCHEDULES,
    PRECISIONS,
    RECIPES,
    TRAINABLE,
    VARIANTS,
    WEIGHT_INITS,
    ConfigError,
    TrainConfig,
)
from alexnet_tf.data.sources import SOURCES
from alexnet_tf.serving import model_card
from alexnet_tf.training.devices import (
    check_global_batch,
    check_precision,
    create_strategy,
    is_chief,
    resolve_precision,
)
from alexnet_tf.training.inputs import RECORD_COUNTS_FILENAME, data_source, describe_data
from alexnet_tf.training.loop import Preempted, TrainingDiverged, TrainLoop
from alexnet_tf.training.watchdog import DataServiceLost
from alexnet_tf.weights.checkpointing import CHECKPOINT_SUBDIR, latest_checkpoint

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.train"


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    d, fv = TrainConfig(), dict(flag_values=flag_values)
    flags.DEFINE_bool(
        "demo", False, "Generate the 10-class demo dataset and train on it with small settings.", **fv
    )
    flags.DEFINE_string("demo_cache_dir", d.demo_cache_dir, "Where --demo keeps its dataset and runs.", **fv)
    flags.DEFINE_string("data_dir", d.data_dir, "TFRecord shards + labels.txt (or a tfds data dir).", **fv)
    flags.DEFINE_enum("data_source", d.data_source, list(SOURCES), "Where the images come from.", **fv)
    flags.DEFINE_string("train_pattern", d.train_pattern, "Glob of training shards inside data_dir.", **fv)
    flags.DEFINE_string("eval_pattern", d.eval_pattern, "Glob of validation shards inside data_dir.", **fv)
    flags.DEFINE_integer(
        "label_offset", d.label_offset, "Subtracted from stored labels; default: detect.", **fv
    )
    flags.DEFINE_integer("num_classes", d.num_classes, "Classes; default and check: the labels file.", **fv)
    flags.DEFINE_integer("image_size", d.image_size, "Crop size.", **fv)
    flags.DEFINE_enum(
        "recipe",
        d.recipe,
        list(RECIPES),
        "Defaults to start from: paper (the 2012 recipe) or torchvision (its reference recipe: "
        "normalised input, PyTorch's initialisation, random-resized crops, weight decay 1e-4, "
        "lr 0.01 per 256 images, /10 every 30 epochs). Any other flag overrides one part of it; "
        "--demo's settings replace the recipe's where both set one.",
        **fv,
    )
    flags.DEFINE_enum(
        "input_convention",
        d.input_convention,
        INPUT_CONVENTIONS,
        "What the model's first layer sees: paper (0-255 RGB minus the mean pixel) or torchvision "
        "(RGB / 255 normalised by ImageNet's mean and std, by a layer inside the model).",
        **fv,
    )
    flags.DEFINE_enum("augment", d.augment, ["paper", "inception"], "Training crops.", **fv)
    flags.DEFINE_float(
        "lighting_std", d.lighting_std, "Stddev of the paper's PCA lighting noise; 0 turns it off.", **fv
    )
    flags.DEFINE_bool("skip_corrupt", d.skip_corrupt, "Skip corrupt shards/images instead of failing.", **fv)
    flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Default: training examples // batch.", **fv)
    flags.DEFINE_integer(
        "eval_steps",
        d.eval_steps,
        "Global validation batches (of --batch_size images) per evaluation; default: all.",
        **fv,
    )
    flags.DEFINE_string(
        "data_service",
        d.data_service,
        "grpc://HOST:PORT of a tf.data service dispatcher (python -m alexnet_tf.data_service): its "
        "workers read, decode and crop the training images; --data_dir must be readable there too.",
        **fv,
    )
    flags.DEFINE_float(
        "data_service_wait_s", d.data_service_wait_s, "Seconds to wait for the dispatcher at start.", **fv
    )
    flags.DEFINE_float(
        "data_service_timeout_s",
        d.data_service_timeout_s,
        "Stop (checkpoint, status 1) when a step has waited this long for batches and the "
        "dispatcher does not answer.",
        **fv,
    )
    flags.DEFINE_enum("variant", d.variant, VARIANTS, "AlexNet variant.", **fv)
    flags.DEFINE_float(
        "dropout_rate",
        d.dropout_rate,
        "Dropout rate (0: off). paper, caffe: on the outputs of fc6 and fc7; "
        "one_weird_trick: on their inputs (torchvision's order).",
        **fv,
    )
    flags.DEFINE_float(
        "hidden_bias", d.hidden_bias, "Bias init of conv2/4/5, fc6, fc7; default 1.0 (paper).", **fv
    )
    flags.DEFINE_float("weight_init_stddev", d.weight_init_stddev, "Stddev of the N(0, s) kernel init.", **fv)
    flags.DEFINE_enum(
        "weight_init",
        d.weight_init,
        WEIGHT_INITS,
        "Kernel initialisation: variant (paper, caffe: normal; one_weird_trick: pytorch), normal "
        "(N(0, --weight_init_stddev)) or pytorch (U(+-1/sqrt(fan_in)), PyTorch's default).",
        **fv,
    )
    flags.DEFINE_string(
        "init_from",
        d.init_from,
        "Fine-tune: start from these weights, a .keras file (e.g. from python -m alexnet_tf.import_weights) "
        "or a "
        "training checkpoint or model dir; fc8 is new. Ignored when --model_dir has checkpoints.",
        **fv,
    )
    flags.DEFINE_enum(
        "trainable",
        d.trainable,
        TRAINABLE,
        "What trains: all, fc (fc6-fc8) or head (fc8); the rest is frozen.",
        **fv,
    )
    flags.DEFINE_float(
        "head_lr_multiplier",
        d.head_lr_multiplier,
        "fc8's learning rate / the others' (Caffe's fine-tuning: 10).",
        **fv,
    )
    flags.DEFINE_integer("epochs", d.epochs, "Passes over the training set.", **fv)
    flags.DEFINE_integer("train_steps", d.train_steps, "Total optimizer steps; overrides --epochs.", **fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch, split over replicas.", **fv)
    flags.DEFINE_float(
        "learning_rate", d.learning_rate, "Rate at batch 128; scaled by batch_size / 128.", **fv
    )
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, LR_SCHEDULES, "paper: /10 on a validation plateau.", **fv)
    flags.DEFINE_list(
        "lr_decay_epochs", [str(e) for e in d.lr_decay_epochs], "Boundaries of --lr_schedule=step.", **fv
    )
    flags.DEFINE_float("lr_decay_factor", d.lr_decay_factor, "Factor of each drop (paper and step).", **fv)
    flags.DEFINE_integer(
        "plateau_patience", d.plateau_patience, "Epochs without improvement before a drop.", **fv
    )
    flags.DEFINE_integer("max_lr_drops", d.max_lr_drops, "Most drops of the paper schedule.", **fv)
    flags.DEFINE_float("warmup_epochs", d.warmup_epochs, "Linear warm-up length.", **fv)
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum.", **fv)
    flags.DEFINE_float("weight_decay", d.weight_decay, "Weight decay of the kernels.", **fv)
    flags.DEFINE_bool(
        "decoupled_weight_decay", d.decoupled_weight_decay, "Decay in the optimizer, not the loss.", **fv
    )
    flags.DEFINE_float(
        "ema_decay",
        d.ema_decay,
        "Keep an exponential moving average of the weights, updated after every step, and use it "
        "for validation, the results and the export: 0.99 averages about the last 100 steps, "
        "0.999 the last 1000. 0 (the paper): none.",
        **fv,
    )
    flags.DEFINE_enum("precision", d.precision, PRECISIONS, "auto: mixed_bfloat16 where supported.", **fv)
    flags.DEFINE_enum("distribution", d.distribution, DISTRIBUTIONS, "tf.distribute strategy.", **fv)
    flags.DEFINE_integer(
        "steps_per_execution", d.steps_per_execution, "Train steps per tf.function call.", **fv
    )
    flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile the forward/backward pass with XLA.", **fv)
    flags.DEFINE_integer("seed", d.seed, "Random seed; default: random (0 with --deterministic).", **fv)
    flags.DEFINE_bool("deterministic", d.deterministic, "Deterministic ops and seeds (slower).", **fv)
    flags.DEFINE_string("model_dir", d.model_dir, "Checkpoints and TensorBoard logs.", **fv)
    flags.DEFINE_string("export_dir", d.export_dir, "SavedModel base path; default <model_dir>/export.", **fv)
    flags.DEFINE_bool(
        "export",
        d.export,
        "Export a SavedModel at the end; --noexport skips it (sweeps, jobs that export later with "
        "python -m alexnet_tf.export --checkpoint=<model_dir>).",
        **fv,
    )
    flags.DEFINE_integer("checkpoint_every_steps", d.checkpoint_every_steps, "Also at every epoch end.", **fv)
    flags.DEFINE_integer("keep_checkpoints", d.keep_checkpoints, "Checkpoints kept.", **fv)
    flags.DEFINE_integer("log_every_steps", d.log_every_steps, "Training scalars every N steps.", **fv)
    flags.DEFINE_bool("ten_crop_eval", d.ten_crop_eval, "Also evaluate ten crops after training.", **fv)
    flags.DEFINE_bool("histograms", d.histograms, "Weight histograms every epoch.", **fv)
    flags.DEFINE_integer(
        "gradcam_images",
        d.gradcam_images,
        "Validation images whose Grad-CAM overlays (conv5) TensorBoard shows every epoch; 0: none.",
        **fv,
    )
    flags.DEFINE_list("profile_steps", None, "first,last step of a profiler trace, e.g. 20,25.", **fv)


def config_from_flags(flag_values):
    """TrainConfig from parsed flags: the defaults, then --recipe's values, then --demo's, then
    the flags given (any flag overrides the part of the recipe or demo it names)."""
    overrides = dict(RECIPES[flag_values.recipe], recipe=flag_values.recipe)
    if flag_values.demo:
        replaced = sorted(name for name in set(overrides) & set(DEMO_VALUES) if not flag_values[name].present)
        if replaced:
            logging.info(
                "--demo's settings replace these of --recipe=%s: %s (flags given override both)",
                flag_values.recipe,
                ", ".join(f"{name}={DEMO_VALUES[name]}" for name in replaced),
            )
        overrides.update(DEMO_VALUES)
    for field in dataclasses.fields(TrainConfig):
        if field.name in flag_values and flag_values[field.name].present:
            overrides[field.name] = flag_values[field.name].value
    if "lr_decay_epochs" in overrides:
        overrides["lr_decay_epochs"] = tuple(float(e) for e in overrides["lr_decay_epochs"])
    if overrides.get("profile_steps") is not None:
        overrides["profile_steps"] = tuple(int(s) for s in overrides["profile_steps"])
    return TrainConfig(**overrides)


def run(config):
    """Trains, evaluates every epoch, checkpoints, logs to TensorBoard and exports at the end.

    Re-running with the same config and model_dir resumes from the newest checkpoint.

    Args:
      config: TrainConfig.

    Returns:
      TrainResult.

    Raises:
      ConfigError: bad flags, data dir or model dir (one-line message).
      TrainingDiverged: the loss or weights became NaN/inf; no checkpoint of them is written.
      Preempted: SIGTERM arrived; a checkpoint was written first.
    """
    config.validate()
    data_source(config)  # the data source's own checks, before anything starts
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any op runs.
    strategy = create_strategy(config.distribution)
    check_global_batch(config.batch_size, strategy.num_replicas_in_sync)
    if config.demo:  # from here on, the generated data dir is the config's data dir
        config = _resolve_demo(config)
    info = describe_data(
        config,
        count_cache=os.path.join(config.model_dir, RECORD_COUNTS_FILENAME),
        write_count_cache=is_chief(strategy),
    )
    precision = resolve_precision(config.precision)
    check_precision(precision, config.variant)
    if hardware.onednn_default and not hardware.has_gpu():
        logging.info(
            "oneDNN's CPU kernels are on (%s; TensorFlow leaves them off on CPUs without "
            "AVX512_VNNI/BF16 or AMX, and they trained 1.35-1.46x as fast on an AVX2 EPYC: "
            "docs/design/portability.md); TF_ENABLE_ONEDNN_OPTS=0 turns them off",
            hardware.onednn_default,
        )
    elif not hardware.onednn_enabled() and not hardware.has_gpu():
        logging.info(
            "TensorFlow runs its Eigen CPU kernels (oneDNN off); TF_ENABLE_ONEDNN_OPTS=1 trains "
            "1.35-1.46x as fast on an AVX2 EPYC (docs/design/portability.md)"
        )
    # The process-wide state of a run, in one place: the dtype policy, the seeds, determinism.
    # Without --seed a seed is drawn; the run keeps it in its checkpoints (TrainLoop), so that
    # even an unseeded run resumes exactly.
    seed = config.seed if config.seed is not None else (0 if config.deterministic else None)
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    keras.utils.set_random_seed(seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        return TrainLoop(config, strategy, info, precision, seed).fit()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _resolve_demo(config):
    """The config with --demo's generated data dir, and a fresh timestamped run dir without --model_dir."""
    from alexnet_tf.data import demo  # only the demo needs it

    cache_dir = os.path.expanduser(config.demo_cache_dir)
    logging.info("Preparing the demo dataset in %s", cache_dir)
    data_dir = demo.build_demo_dataset(cache_dir, seed=0)
    model_dir = config.model_dir or os.path.join(cache_dir, "runs", time.strftime("%Y%m%d-%H%M%S"))
    return dataclasses.replace(config, data_dir=data_dir, model_dir=model_dir)


def main(argv):
    """Hands the flags to `run`; expected failures end with one line on stderr, no traceback."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = config_from_flags(FLAGS)
    try:
        result = run(config)
    except ConfigError as e:
        cli.fail(PROGRAM, e)
    except TrainingDiverged as e:
        cli.fail(PROGRAM, f"training diverged: {e}", cli.ExitStatus.FAILED)
    except Preempted as e:
        # With the tf.data service, Python's last garbage collection tears down its client, which
        # retries a dead dispatcher and workers first (3-10 s measured); the checkpoint and logs
        # are written and closed by now, and a preempted trainer has no time to spare.
        cli.fail(PROGRAM, e, cli.ExitStatus.PREEMPTED, now=bool(config.data_service))
    except DataServiceLost as e:
        cli.fail(PROGRAM, e, cli.ExitStatus.FAILED, now=True)
    except KeyboardInterrupt:
        cli.fail(PROGRAM, interrupted_message(config.model_dir), cli.ExitStatus.INTERRUPTED)
    except tf.errors.OpError as e:  # e.g. a corrupt shard or a label out of range: bad input
        logging.debug("TensorFlow error", exc_info=True)
        cli.fail(
            PROGRAM,
            f"{type(e).__name__}: {cli.error_message(e)} (--v=1 shows the traceback)",
            cli.status_of(e),
        )
    print_report(result)


def interrupted_message(model_dir):
    """What a Ctrl-C leaves: Ctrl-C writes no checkpoint (SIGTERM does), so name the newest one."""
    try:
        newest = model_dir and latest_checkpoint(os.path.join(model_dir, CHECKPOINT_SUBDIR))
    except ConfigError:
        newest = None
    if not newest:
        return "interrupted before the first checkpoint; re-running the same command starts from step 0"
    return (
        f"interrupted; re-run the same command to resume from its newest checkpoint, "
        f"{os.path.basename(newest)} (steps after it are trained again)"
    )


def print_report(result):
    """Prints where the run's outputs went and how to look at them."""
    v = result.validation
    epochs = f"{result.epochs_completed} epochs"
    if result.epoch_images:
        epochs += f" and {result.epoch_images} images of epoch {result.epochs_completed + 1}"
    print(
        f"\nTrained {result.global_step} steps ({epochs}), "
        f"final learning rate {result.learning_rate:.6g}, {result.num_replicas} replica(s), "
        f"{result.precision}, {result.images_per_sec:.1f} images/sec."
    )
    if result.ema_decay:
        print(
            f"EMA weights:      validation and SavedModel use the moving averages of the weights "
            f"(--ema_decay={result.ema_decay:g})"
        )
    if v:
        print(
            f"Validation (centre crop): top-1 {100 * v['top1']:.2f}%  top-5 {100 * v['top5']:.2f}%  "
            f"loss {v['loss']:.4f}  ({int(v['count'])} images)"
        )
    if result.validation_ten_crop:
        t = result.validation_ten_crop
        print(f"Validation (ten crop):    top-1 {100 * t['top1']:.2f}%  top-5 {100 * t['top5']:.2f}%")
    print(f"TensorBoard logs: {result.model_dir}   (open with: tensorboard --logdir {result.model_dir})")
    print(f"Checkpoints:      {os.path.dirname(result.checkpoint) if result.checkpoint else '-'}")
    card = os.path.join(result.model_dir, model_card.MODEL_CARD_FILENAME)
    if tf.io.gfile.exists(card):
        print(f"Model card:       {card}")
    if result.export_skipped:
        print(f"SavedModel:       none: {result.export_skipped}")
    else:
        print(f"SavedModel:       {result.export_path or '-'}")


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
