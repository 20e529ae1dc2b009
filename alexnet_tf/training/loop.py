"""The loop of one training run: resume, train to each epoch end, evaluate, checkpoint, export.

`TrainLoop(...).fit()` is what `alexnet_tf.train.run` calls once the strategy, the data, the
seeds and the precision policy are settled (this module sets no process-wide state).
Progress lives in Python counters (step, epoch) that are copied into the checkpoint at every
save. A resumed run continues exactly: the checkpoint holds the run's seed and the dropout
generators' states, and the training data restarts at the step's place in its epoch's order
(`alexnet_tf.data.order`), so a killed and restarted run ends with the same weights.
The loop runs training in chunks of at most --steps_per_execution steps that end on every
logging, checkpoint, epoch and profiler boundary; between chunks it checks the loss (NaN/inf
stops training without saving) and the workers' summed SIGTERM flag (all workers save and
stop at the same step). With --ema_decay, each validation, the final results and the export
use the moving averages of the weights (`step.averaged_weights`), while training continues
from the training weights.
"""

import dataclasses
import json
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import explain, hardware, metrics
from alexnet_tf.cli import check_writable
from alexnet_tf.config import CONFIG_FILENAME, ConfigError, config_differences, config_json
from alexnet_tf.serving import embedding, model_card, saved_model
from alexnet_tf.training import init_from, summaries
from alexnet_tf.training.devices import is_chief, num_workers, worker_name
from alexnet_tf.training.inputs import inexact_resume_reason, make_input_fns, steps_per_epoch
from alexnet_tf.training.preemption import PreemptionSignal, send_test_signal
from alexnet_tf.training.progress import PROGRESS_PARTS, Layout, Tracker, read_stored
from alexnet_tf.training.step import (
    averaged_weights,
    build_model,
    build_state,
    make_eval_function,
    make_train_function,
    run_evaluation,
    weight_decay_loss,
)
from alexnet_tf.training.watchdog import InputWatchdog
from alexnet_tf.weights.checkpointing import (
    CHECKPOINT_SUBDIR,
    Checkpointer,
    check_model_spec,
    read_model_spec,
)


def record_config(model_dir, config, first_start):
    """Writes the run's TrainConfig to <model_dir>/config.json at its first start; a resume logs what differs.

    The first start is a run with no checkpoint yet (a start that failed before its first
    checkpoint is rewritten by the next). The file is written whole or not at all (a temporary
    file renamed over it), and a resume never rewrites it: it keeps the flags the run began
    with. Runs begun before config.json existed resume without one. The chief calls this.
    """
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if first_start:
        temporary = f"{path}.tmp-{os.getpid()}"
        with tf.io.gfile.GFile(temporary, "w") as f:
            json.dump(config_json(config), f, indent=2, sort_keys=True)
        tf.io.gfile.rename(temporary, path, overwrite=True)
        return
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path) as f:
            stored = json.load(f)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except (tf.errors.OpError, ValueError) as e:
        logging.warning("Cannot read %s (%s); the resumed run's flags are not compared with it", path, e)
        return
    differences = config_differences(stored, config)
    if differences:
        logging.info(
            "Resuming with flags that differ from the first start's (%s): %s", path, ", ".join(differences)
        )


# What the log lines and the report add to figures of the weights' moving averages (--ema_decay).
EMA_NOTE = " (EMA weights)"


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run reports (also written to <model_dir>/results.json by the chief)."""

    model_dir: str
    global_step: int
    optimizer_iterations: int
    epochs_completed: int
    learning_rate: float
    validation: dict  # loss, top1, top5 (centre crop) of the last evaluation
    validation_ten_crop: dict  # empty unless ten_crop_eval
    checkpoint: str
    export_path: str  # "" where no SavedModel was written
    precision: str
    num_replicas: int
    images_per_sec: float  # training throughput of the last logging interval
    # Why no SavedModel was written (--noexport), and how to write one; "" when exported.
    # Last and with a default: results.json files written before it still load.
    export_skipped: str = ""
    # Images of the next epoch trained on: a run that --train_steps stopped inside an epoch.
    epoch_images: int = 0
    # > 0: `validation`, `validation_ten_crop` and the export are of the weights' moving averages.
    ema_decay: float = 0.0


def _steps_to_boundary(step, every):
    return every - step % every


class _Meter:
    """Sums the train function's outputs between log lines and times the images.

    `total_loss` is the interval's mean loss plus the weight-decay term of the weights before
    the chunk that ends at the log line: with one step per log line (or per chunk), the
    term of that step's weights, as the train step once added it to every step.
    """

    def __init__(self):
        self.sums, self.steps, self.images, self.seconds = np.zeros(len(metrics.TRAIN_SUMS)), 0, 0, 0.0
        self.weight_decay_loss = 0.0  # the decay term, from the weights before the logged chunk

    def add(self, sums, steps, images, seconds):
        self.sums += sums
        self.steps += steps
        if seconds is not None:  # None: a chunk that included tracing
            self.images += images
            self.seconds += seconds

    def metrics(self):
        sums = metrics.TRAIN_SUMS.unpack(self.sums)
        count = max(sums["count"], 1.0)
        values = {
            "loss": sums["cross_entropy"] / count,
            "total_loss": sums["loss"] / max(self.steps, 1) + self.weight_decay_loss,
            "top1": sums["top1"] / count,
            "top5": sums["top5"] / count,
        }
        if self.seconds:
            values["images_per_sec"] = self.images / self.seconds
        return values


class TrainLoop:
    """One training run: restore, train to each epoch end, evaluate, checkpoint, export."""

    def __init__(self, config, strategy, info, precision, seed):
        """Builds the run's state; `seed` (int) is the one `train.run` seeded the RNGs with.

        It becomes the run's seed (of the data order and augmentation) unless a checkpoint
        holds one already: a resumed run keeps the seed it started with.
        """
        self.config, self.strategy, self.info, self.precision = config, strategy, info, precision
        self.model_dir = model_dir = config.model_dir
        self.chief = is_chief(strategy)
        self.name = worker_name(strategy)
        pipelines = num_workers(strategy)
        self.steps_per_epoch = steps_per_epoch(config, info, pipelines)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than the {info.train_examples} training examples"
            )
        exact_order = bool(info.train_shard_records)  # TFRecord shards: their exact order
        self.tracker = Tracker(
            Layout(config.batch_size, pipelines, strategy.num_replicas_in_sync),
            self.steps_per_epoch,
            [info.train_shard_records[k] for k in sorted(info.train_shard_records)] if exact_order else None,
            epochs_are_passes=not (exact_order and config.steps_per_epoch),
        )
        checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
        # Where the run stands, read before anything is written: a re-run whose flags cannot
        # be honoured stops here (training.progress).
        stored = read_stored(checkpoint_dir)
        self.progress, self.resume_change = self.tracker.fresh(), ""
        if stored is not None:
            self.progress, self.resume_change = self.tracker.resume(stored, model_dir)
        self._check_target(config)
        if self.chief:
            check_writable(model_dir)
        start = init_from.plan(config, checkpoint_dir)  # resume, --init_from's weights, or fresh
        self.input_conversion = start.input_conversion
        if start.source is not None and start.convention not in (None, config.input_convention):
            # The weights' convention wins (init_from.plan logs it): config.json records it.
            self.config = config = dataclasses.replace(config, input_convention=start.convention)
        spec = init_from.model_spec(config, info.num_classes, start)
        # With --init_from, the spec is written once the weights have been found to fit.
        check_model_spec(checkpoint_dir, spec, write=self.chief and start.source is None)
        if self.chief:  # settings known to train badly, once the re-run checks have passed
            for line in config.warnings(from_weights=start.from_weights):
                logging.warning("%s", line)
        self.seed = seed
        loss_scaling = precision == "mixed_float16"
        self.state = build_state(
            config,
            strategy,
            info.num_classes,
            self.steps_per_epoch,
            config.train_steps or config.epochs * self.steps_per_epoch,
            loss_scaling,
            seed=seed,
            input_conversion=self.input_conversion,
            total_follows_offset=bool(config.train_steps),
        )
        self.state.schedule.set_offset(self.tracker.schedule_offset(self.progress))
        if start.source is not None:
            init_from.initialise(config, start, self.state.model, strategy)
            check_model_spec(checkpoint_dir, spec, write=self.chief)
        if self.chief:
            record_config(model_dir, config, first_start=stored is None)
        self.train_fn = make_train_function(
            strategy, self.state, config.batch_size, config.jit_compile, loss_scaling
        )
        self.eval_fn = make_eval_function(strategy, self.state.model, ten_crop=False)
        # Checkpoints written before exact resume lack the seed and the dropout generators.
        self.checkpointer = Checkpointer(
            self.state.checkpoint,
            checkpoint_dir,
            self.chief,
            config.keep_checkpoints,
            optional=("seed", "random", *PROGRESS_PARTS),
        )
        self.writers = summaries.SummaryWriters(model_dir, self.chief)
        self.saved = None  # (step, epoch) of the newest checkpoint
        self.hardware = hardware.describe()  # what the model card says the run trained on
        self.last_images_per_sec = 0.0
        self.preemption = None
        self.profiling = False
        self.gradcam_sample = None  # the validation images of the `gradcam` summary (chief only)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self):
        try:
            # The watchdog ends a step's wait for tf.data service batches (dead dispatcher, SIGTERM).
            with (
                PreemptionSignal() as self.preemption,
                InputWatchdog(
                    self.config, self.strategy, self.state, self.train_fn, self._save, Preempted
                ) as self.watchdog,
            ):
                return self._fit()
        finally:
            if self.profiling:
                tf.profiler.experimental.stop()
            self.writers.close()
            self.checkpointer.close()

    def _fit(self):
        restored = self.checkpointer.restore_latest()
        if restored and (int(self.state.step.numpy()), int(self.state.epoch.numpy())) != (
            self.step,
            self.epoch,
        ):
            raise ConfigError(f"{restored} is not the checkpoint the run started from; re-run the command")
        self.seed = self._run_seed(restored)
        if restored:
            self.saved = (self.step, self.epoch)
            logging.info("Resuming from %s at step %d (epoch %d).", restored, self.step, self.epoch)
            if self.resume_change:
                logging.warning("%s: %s.", self.name, self.resume_change)
        reason = inexact_resume_reason(self.config)
        if reason and self.chief:
            logging.warning("A resumed run will not continue exactly: %s", reason)
        logging.info(
            "%s: %d replica(s), %s, global batch %d, %d steps per epoch, %d steps in %d epochs.",
            self.name,
            self.strategy.num_replicas_in_sync,
            self.precision,
            self.config.batch_size,
            self.steps_per_epoch,
            self.total_steps,
            self.num_epochs,
        )
        finished = self._finished_result()
        if finished is not None:
            logging.info(
                "%s: the run in %s is complete (step %d of %d, %d epochs); nothing to do. "
                "Raise --epochs or --train_steps to train further.",
                self.name,
                self.model_dir,
                self.step,
                self.total_steps,
                self.epoch,
            )
            return finished
        self.inputs = make_input_fns(
            self.config, self.info, self.seed, start_step=self.step, position=self.progress.data
        )
        if self.step == 0 and self.chief:
            self._write_images()
        self.gradcam_sample = self._gradcam_sample()
        iterator = iter(self.strategy.distribute_datasets_from_function(self.inputs.train))
        validation = {}
        while not self._target_reached():
            epoch_end = self.step + self.tracker.steps_left(self.progress)
            end = min(epoch_end, self.config.train_steps) if self.config.train_steps else epoch_end
            self._train_until(iterator, end)
            if self.step < epoch_end:  # --train_steps ends the run inside an epoch, which stays open
                logging.info(
                    "%s: stopped at --train_steps=%d inside epoch %d (%d images of it trained on); "
                    "raising --train_steps or --epochs continues it.",
                    self.name,
                    self.config.train_steps,
                    self.epoch + 1,
                    self.progress.epoch_images,
                )
                break
            validation = self._end_epoch()
        self._save()  # a run that stopped inside an epoch has not saved its last step yet
        if not validation:  # trained to the end, but stopped before its results were written
            with averaged_weights(self.state):
                validation = run_evaluation(self.strategy, self.eval_fn, self.inputs.evaluation)
        ten_crop = {}
        if self.config.ten_crop_eval:
            ten_crop_fn = make_eval_function(self.strategy, self.state.model, ten_crop=True)
            with averaged_weights(self.state):
                ten_crop = run_evaluation(
                    self.strategy,
                    ten_crop_fn,
                    lambda context: self.inputs.evaluation(context, ten_crop=True),
                )
            self.writers.scalars(
                "validation",
                self.step,
                {"ten_crop_top1": ten_crop["top1"], "ten_crop_top5": ten_crop["top5"]},
            )
        return self._finish(validation, ten_crop)

    # -- where the run stands -----------------------------------------------------------------

    @property
    def step(self):
        return self.progress.step

    @property
    def epoch(self):
        return self.progress.epoch

    def _target_reached(self):
        """--train_steps steps trained when given, else --epochs epochs complete."""
        if self.config.train_steps:
            return self.step >= self.config.train_steps
        return self.epoch >= self.config.epochs

    @property
    def total_steps(self):
        """The step the run ends at (--train_steps, or the last step of its last epoch)."""
        if self.config.train_steps:
            return self.config.train_steps
        if self.epoch >= self.config.epochs:
            return self.step
        later_epochs = self.config.epochs - self.epoch - 1
        return self.step + self.tracker.steps_left(self.progress) + later_epochs * self.steps_per_epoch

    @property
    def num_epochs(self):
        """The epoch (counted from 1) the run ends in; with --train_steps, maybe inside it."""
        if not self.config.train_steps:
            return self.config.epochs
        remaining, left = self.config.train_steps - self.step, self.tracker.steps_left(self.progress)
        if remaining <= 0 and not self.progress.epoch_images:  # it ends with the epoch just completed
            return max(self.epoch, 1)
        if remaining <= left:
            return self.epoch + 1
        return self.epoch + 1 + -(-(remaining - left) // self.steps_per_epoch)

    def _check_target(self, config):
        """Refuses a target the run is already past (nothing is written yet)."""
        progress, where = self.progress, f"the run in {self.model_dir}"
        if config.train_steps and progress.step > config.train_steps:
            raise ConfigError(
                f"--train_steps={config.train_steps}, but {where} has trained {progress.step} steps: "
                "raise --train_steps (or leave it out to train to --epochs), or use a new --model_dir"
            )
        if not config.train_steps and (
            progress.epoch > config.epochs or (progress.epoch == config.epochs and progress.epoch_images)
        ):
            raise ConfigError(
                f"--epochs={config.epochs}, but {where} has trained {progress.epoch} epochs and "
                f"{progress.epoch_images} images of the next: raise --epochs, or use a new --model_dir"
            )

    def _run_seed(self, restored):
        """The run's seed: the one its checkpoints hold (the seed of its first start)."""
        seed = int(self.state.seed.numpy())
        if restored and self.config.seed is not None and self.config.seed != seed:
            logging.warning(
                "%s: --seed=%d, but the run in %s started with seed %d; it continues with %d "
                "(a new --model_dir starts a run with the new seed).",
                self.name,
                self.config.seed,
                self.model_dir,
                seed,
                seed,
            )
        elif not restored:
            logging.info(
                "%s: seed %d (kept in the checkpoints; a resumed run continues with it).", self.name, seed
            )
        return seed

    def _train_until(self, iterator, end):
        config, meter, traced = self.config, _Meter(), False
        while self.step < end:
            steps = min(
                config.steps_per_execution,
                end - self.step,
                _steps_to_boundary(self.step, config.log_every_steps),
                _steps_to_boundary(self.step, config.checkpoint_every_steps),
                self._profile(end),
            )
            stop = 1.0 if self.preemption.requested else 0.0
            logs = (self.step + steps) % config.log_every_steps == 0 or self.step + steps == end
            if logs:  # the total loss's decay term: once per log line, not in every step
                meter.weight_decay_loss = weight_decay_loss(self.state)
            start = time.time()
            with self.watchdog.guard(self.step, steps) as train_fn:
                sums = train_fn(iterator, tf.constant(steps), tf.constant(stop)).numpy()
            seconds = time.time() - start
            self.progress = self.tracker.advance(self.progress, steps)
            named = metrics.TRAIN_SUMS.unpack(sums)
            if not np.all(np.isfinite([named["cross_entropy"], named["loss"]])):
                raise TrainingDiverged(self._diverged_message(f"the loss became {named['loss']}"))
            meter.add(sums, steps, steps * config.batch_size, seconds if traced else None)
            traced = True
            if logs:
                self._log_train(meter)
                meter = _Meter()
            if named["stop"] > 0:
                path = self._save()
                raise Preempted(
                    f"preempted (signal {self.preemption.received or 'on another worker'}): "
                    f"checkpoint {path} at step {self.step}; re-run the same command to resume"
                )
            send_test_signal(self.step)
            if self.step % config.checkpoint_every_steps == 0 and self.step != end:
                self._save()
        self._profile(end)  # stops a trace that ends with the epoch

    def _profile(self, end):
        """Starts or stops the profiler trace of steps [first, last] here; steps to its next boundary."""
        if not self.config.profile_steps or not self.chief:
            return end - self.step
        first, last = self.config.profile_steps
        if self.step == first - 1 and not self.profiling:
            tf.profiler.experimental.start(os.path.join(self.model_dir, "train"))
            self.profiling = True
        elif self.step >= last and self.profiling:
            tf.profiler.experimental.stop()
            self.profiling = False
        later = [b - self.step for b in (first - 1, last) if b > self.step]
        return min(later + [end - self.step])

    def _end_epoch(self):
        with averaged_weights(self.state):  # the training weights without --ema_decay
            validation = run_evaluation(self.strategy, self.eval_fn, self.inputs.evaluation)
        self.progress = self.tracker.end_epoch(self.progress)
        # 0 unless the run resumed with another batch inside an epoch: then the next epoch
        # starts the schedule at its first step, as it would have without the change.
        self.state.schedule.set_offset(self.tracker.schedule_offset(self.progress))
        self.writers.scalars(
            "validation", self.step, {k: validation[k] for k in ("loss", "top1", "top5", "images_per_sec")}
        )
        message = ""
        if self.config.lr_schedule == "paper" and self.state.plateau.update(validation["top1"]):
            message = (
                f"; validation top-1 stopped improving: learning rate now {self.state.learning_rate():.6g}"
            )
        if self.chief:
            self.writers.image(
                "train",
                self.step,
                "conv1_filters",
                summaries.conv1_filter_image(self.state.model),
                description="First-layer filters, each stretched to [0, 1], one block per tower (Fig. 3).",
            )
            if self.config.histograms:
                self.writers.histograms("train", self.step, self.state.model.trainable_variables)
            if self.gradcam_sample is not None:
                with averaged_weights(self.state):  # the weights validation measured
                    self._write_gradcam()
        logging.info(
            "%s: epoch %d/%d (step %d): validation%s top-1 %.2f%% top-5 %.2f%% loss %.4f%s",
            self.name,
            self.epoch,
            self.num_epochs,
            self.step,
            EMA_NOTE if self.state.averages else "",
            100 * validation["top1"],
            100 * validation["top5"],
            validation["loss"],
            message,
        )
        self._save()
        if self.chief:
            model_card.record_validation(
                self.model_dir,
                {
                    "epoch": self.epoch,
                    "step": self.step,
                    "validation": {k: validation[k] for k in ("loss", "top1", "top5", "count")},
                    "train_images_per_sec": self.last_images_per_sec,
                    "hardware": self.hardware,
                },
            )
            self._write_model_card()
        return validation

    def _finished_result(self):
        """The TrainResult in results.json when the restored state is that run's end, else None.

        results.json is the last thing a finished run writes, so a run stopped after its final
        checkpoint but before its export still gets evaluated and exported. Every worker reads
        the same file, so all of them take the same branch.
        """
        if not self._target_reached():
            return None
        path = os.path.join(self.model_dir, model_card.RESULTS_FILENAME)
        try:
            with tf.io.gfile.GFile(path, "r") as f:
                results = json.load(f)
            result = TrainResult(**results)
        except (tf.errors.OpError, ValueError, TypeError):
            return None  # missing, unreadable, or written by another version
        if (result.global_step, result.epochs_completed, result.epoch_images) != (
            self.step,
            self.epoch,
            self.progress.epoch_images,
        ):
            return None
        return result

    # -- side effects -----------------------------------------------------------------------

    def _log_train(self, meter):
        values = meter.metrics()
        values["learning_rate"] = self.state.learning_rate()
        self.last_images_per_sec = values.get("images_per_sec", self.last_images_per_sec)
        self.writers.scalars("train", self.step, values)
        logging.info(
            "%s: step %d/%d: loss %.4f top-1 %.2f%% top-5 %.2f%% lr %.6g %s",
            self.name,
            self.step,
            self.total_steps,
            values["loss"],
            100 * values["top1"],
            100 * values["top5"],
            values["learning_rate"],
            f"{values['images_per_sec']:.1f} images/sec" if "images_per_sec" in values else "",
        )

    def _write_images(self):
        grid = summaries.tile_images(summaries.displayable_inputs(self.inputs.preview()))
        self.writers.image(
            "train",
            0,
            "augmented_inputs",
            grid,
            description="Training inputs after augmentation, mean added back.",
        )
        self.writers.image("train", 0, "conv1_filters", summaries.conv1_filter_image(self.state.model))

    def _gradcam_sample(self):
        """The first --gradcam_images validation crops, read once (chief only), or None."""
        count = self.config.gradcam_images
        if not self.chief or not count:
            return None
        if keras.backend.backend() != "tensorflow":
            logging.info("No Grad-CAM images in TensorBoard: explain.grad_cam takes TensorFlow's gradients")
            return None
        try:
            explain.check_layer(self.state.model, explain.DEFAULT_LAYER)
        except ValueError as e:
            logging.info("No Grad-CAM images in TensorBoard (--gradcam_images): %s", e)
            return None
        for images, _ in self.inputs.evaluation().unbatch().batch(count).take(1):
            return images.numpy()
        return None

    def _write_gradcam(self):
        """The `gradcam` image of the validation run: one forward and backward pass of the sample."""
        grid, _ = summaries.gradcam_image(self.state.model, self.gradcam_sample)
        description = summaries.GRADCAM_DESCRIPTION.format(layer=explain.DEFAULT_LAYER)
        self.writers.image("validation", self.step, "gradcam", grid, description=description)

    def _weights_finite(self):
        return all(
            bool(tf.reduce_all(tf.math.is_finite(v.value))) for v in self.state.model.trainable_variables
        )

    def _diverged_message(self, what):
        last = tf.train.latest_checkpoint(self.checkpointer.directory)
        return (
            f"{what} at step {self.step}; stopped without saving. Last good checkpoint: "
            f"{last or 'none'}. Lower --learning_rate (now {self.config.learning_rate:g} at batch 128) "
            "or check the data, then re-run."
        )

    def _save(self):
        if self.saved == (self.step, self.epoch):
            return tf.train.latest_checkpoint(self.checkpointer.directory)
        if not self._weights_finite():
            raise TrainingDiverged(self._diverged_message("the weights became NaN or infinite"))
        self.state.step.assign(self.step)
        self.state.epoch.assign(self.epoch)
        for name, value in self.tracker.checkpoint_values(self.progress).items():
            self.state.progress[name].assign(value)
        path = self.checkpointer.save(self.step)
        self.saved = (self.step, self.epoch)
        logging.info("%s: saved checkpoint %s", self.name, path)
        return path

    def _finish(self, validation, ten_crop):
        export_path, export_skipped = "", ""
        if not self.config.export:
            export_skipped = (
                f"--noexport: no SavedModel was written; `{self._export_command()}` writes the one "
                "this run would have, from its final checkpoint"
            )
            if self.chief:
                logging.info("%s", export_skipped)
        with averaged_weights(self.state):
            if self.chief and self.config.export:
                export_path = self._export()
            if self.chief:
                self._write_projector()
        weights = [v.numpy().ravel() for v in self.state.model.trainable_variables]
        logging.info(
            "%s: final weights fingerprint %.12e %.12e",
            self.name,  # workers must agree
            sum(np.sum(w, dtype=np.float64) for w in weights),
            sum(float(w @ w) for w in weights),
        )
        result = TrainResult(
            model_dir=self.model_dir,
            global_step=self.step,
            optimizer_iterations=int(self.state.optimizer.iterations.numpy()),
            epochs_completed=self.epoch,
            epoch_images=self.progress.epoch_images,
            learning_rate=self.state.learning_rate(),
            validation=validation,
            validation_ten_crop=ten_crop,
            checkpoint=(tf.train.latest_checkpoint(self.checkpointer.directory) or "") if self.chief else "",
            export_path=export_path,
            precision=self.precision,
            num_replicas=self.strategy.num_replicas_in_sync,
            images_per_sec=self.last_images_per_sec,
            export_skipped=export_skipped,
            ema_decay=self.config.ema_decay,
        )
        if self.chief:
            # The cards first: results.json is the last thing a finished run writes.
            self._write_model_card(dataclasses.asdict(result))
            if export_path:
                self._write_model_card(
                    dataclasses.asdict(result),
                    path=export_path,
                    origin=f"SavedModel exported by `python -m alexnet_tf.train` from {self.model_dir}.",
                )
            with tf.io.gfile.GFile(os.path.join(self.model_dir, model_card.RESULTS_FILENAME), "w") as f:
                json.dump(dataclasses.asdict(result), f, indent=2)
        # A last collective: the other workers wait for the chief's export and everyone exits
        # together (a worker that leaves early is reported as crashed by the others).
        ones = self.strategy.run(lambda: tf.constant(1.0))
        self.strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)
        return result

    def _write_model_card(self, results=None, path=None, origin=None):
        """MODEL_CARD.md in the model dir (or `path`) from the run's records (`results`: not yet on disk)."""
        spec = read_model_spec(os.path.join(self.model_dir, CHECKPOINT_SUBDIR))
        written = model_card.write_model_card(
            path or self.model_dir,
            self.state.model,
            records_dir=self.model_dir,
            results=results,
            spec=spec,
            hardware=self.hardware,
            origin=origin or f"Model dir of a `python -m alexnet_tf.train` run: {self.model_dir}.",
        )
        logging.info("Wrote the model card %s", written)

    def _write_projector(self):
        """fc7 embeddings of the first validation images for TensorBoard's projector (chief only)."""
        if not embedding.has_layer(self.state.model, embedding.FEATURES_LAYER):
            return
        model = embedding.feature_model(self.state.model, embedding.FEATURES_LAYER, with_output=True)
        sample = self.inputs.evaluation().unbatch().take(summaries.PROJECTOR_MAX_IMAGES).batch(64)
        features, labels, predicted, thumbnails = [], [], [], []
        for images, batch_labels in sample:
            fc7, logits = model(images, training=False)
            features.append(np.asarray(tf.cast(fc7, tf.float32)))
            predicted.append(np.argmax(np.asarray(logits), axis=-1))
            labels.append(batch_labels.numpy())
            thumbnails.append(summaries.sprite_thumbnails(images))
        if not features:
            return
        entries = self.info.labels or range(self.info.num_classes)
        names = [getattr(entry, "name", entry) for entry in entries]  # LabelEntry, tfds name or index
        log_dir = os.path.join(self.model_dir, "validation")
        summaries.write_projector(
            log_dir,
            np.concatenate(features),
            {
                "label": [names[i] for i in np.concatenate(labels)],
                "predicted": [names[i] for i in np.concatenate(predicted)],
            },
            np.concatenate(thumbnails),
            tensor_name=embedding.FEATURES_LAYER,
        )
        logging.info(
            "Wrote the fc7 embeddings of %d validation images for TensorBoard's projector to %s",
            sum(len(f) for f in features),
            log_dir,
        )

    def _export_command(self):
        """The `python -m alexnet_tf.export` command that writes the SavedModel `_export` would."""
        words = [
            "python -m alexnet_tf.export",
            f"--checkpoint={self.model_dir}",
            f"--export_dir={self.config.export_dir or os.path.join(self.model_dir, 'export')}",
        ]
        if self.info.labels_file:
            words.append(f"--labels={self.info.labels_file}")
        return " ".join(words)

    def _export(self):
        """Exports a float32 copy of the model: serving must not depend on the training policy."""
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            serving_model = build_model(self.config, self.info.num_classes, self.input_conversion)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        serving_model.set_weights([v.numpy() for v in self.state.model.weights])
        export_dir = self.config.export_dir or os.path.join(self.model_dir, "export")
        path = saved_model.export_saved_model(serving_model, export_dir, labels=self.info.labels)
        logging.info("Exported the SavedModel to %s%s", path, EMA_NOTE if self.state.averages else "")
        return path
