"""Checkpoints: where they go (the chief's model dir, a temporary folder elsewhere), the model spec, resuming.

A training checkpoint (`<model_dir>/checkpoints/ckpt-<step>`) is a tf.train.Checkpoint of
the model weights, the optimizer (momentum slots, iteration count, loss scale), the
plateau schedule's state, the epoch and step counters, the run's seed and the state of the
dropout layers' random generators: all a resumed run needs to continue exactly; a run with
--ema_decay adds the moving averages of its trainable weights ("average/"). TensorFlow
writes the data first and the `checkpoints/checkpoint` index last, so a process killed
while saving leaves the previous checkpoint as the latest. `model_spec.json` beside the
checkpoints records what shape of model they hold (and the input convention and trainable
layers of a fine-tuning run, and the --ema_decay of a run that averages), so a mismatching run
stops before touching them. Evaluating, exporting or fine-tuning from the checkpoint of a
run that averaged reads the averages instead of the training weights (`restore_model`).
"""

import json
import os
import re
import shutil
import tempfile
import warnings

from absl import logging
import tensorflow as tf

from alexnet_tf.config import ConfigError

CHECKPOINT_SUBDIR = "checkpoints"
MODEL_SPEC_FILENAME = "model_spec.json"
# Model spec keys written only when they differ from these (spec files from before them match).
MODEL_SPEC_DEFAULTS = {"input_conversion": None, "trainable": "all", "ema_decay": 0.0}


def model_weights(model):
    """The model's variables keyed by path ("conv1/kernel"), as a checkpoint holds them.

    Keyed by name, not by layer position, so a checkpoint restores into a model built with
    or without dropout layers (evaluation) and survives layers being reordered. The values are
    the Keras variables themselves, the objects the optimizer tracks too, so a checkpoint holds
    each weight once (under "model/"); their backing tf.Variables would be a second copy of
    every weight beside the optimizer's (checkpoints written so still restore).
    """
    return {variable.path: variable for variable in model.weights}


def random_state(model):
    """The model's random-generator state variables (dropout's SeedGenerator), keyed "layer/index".

    They are not among `model.weights`: a training checkpoint holds them beside the weights,
    so that a resumed run's dropout masks continue the uninterrupted run's sequence.
    """
    weights = {id(variable) for variable in model.weights}
    states = {}
    for layer in model.layers:
        own = [variable for variable in layer.variables if id(variable) not in weights]
        states.update({f"{layer.name}/{i}": variable.value for i, variable in enumerate(own)})
    return states


_CHECKPOINT_FILE = re.compile(r"^(ckpt-\d+)\.(index|data-\d+-of-\d+)$")


def latest_checkpoint(directory):
    """The newest checkpoint's prefix in `directory`, or None when it holds no complete checkpoint.

    tf.train.latest_checkpoint says None also when the `checkpoint` state file names a
    checkpoint whose index is gone, or the state file is gone beside complete checkpoints: a
    trainer would then start over, and its checkpoint manager delete the checkpoints that are
    still good. Those cases are refused instead (a save interrupted before its first index
    leaves no complete checkpoint, which is a fresh start as before).

    Raises:
      ConfigError: checkpoint files without a newest complete checkpoint, naming what is there.
    """
    path = tf.train.latest_checkpoint(directory)
    if path is not None or not tf.io.gfile.isdir(directory):
        return path
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError) as e:  # a state file that does not parse
        raise ConfigError(
            f"{directory}/checkpoint cannot be read ({_first_line(e)}): restore or remove it"
        ) from None
    complete = sorted(
        {
            m.group(1)
            for m in map(_CHECKPOINT_FILE.match, tf.io.gfile.listdir(directory))
            if m and m.group(2) == "index"
        },
        key=lambda name: int(name.split("-")[1]),
    )
    named = os.path.basename(state.model_checkpoint_path) if state and state.model_checkpoint_path else None
    if named is None and not complete:
        return None
    problem = (
        f"the newest checkpoint, {named}, has no {named}.index"
        if named
        else f"its 'checkpoint' state file is missing beside {', '.join(complete)}"
    )
    raise ConfigError(
        f"{directory}: {problem} (complete: {', '.join(complete) or 'none'}); nothing was changed. Restore "
        "the missing file, or point the 'checkpoint' state file at a complete one, or use a new --model_dir"
    )


def read_model_spec(checkpoint_dir):
    """The model spec dict stored beside the checkpoints in `checkpoint_dir`, or None."""
    path = os.path.join(checkpoint_dir, MODEL_SPEC_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def restore_model(path):
    """Rebuilds the model a training checkpoint holds and reads its weights into it.

    The weights are read by name (`checkpoint_weights`) and assigned, which works on every
    Keras backend: a tf.train.Checkpoint restores only into TensorFlow variables, and on JAX
    or PyTorch it would restore nothing and still report success.

    Args:
      path: a model dir, its checkpoints dir, or a checkpoint prefix.

    A checkpoint of a run with --ema_decay (its model spec says so) gives the moving averages
    of the weights that trained, and the weights of the frozen layers; a log line says so.

    Returns:
      (keras.Model for inference (dropout and weight decay off), checkpoint prefix).

    Raises:
      ConfigError: no checkpoint there, no model_spec.json saying which network it is, a
        checkpoint that cannot be read, or one without every weight of that network.
    """
    from alexnet_tf.model import build_alexnet
    from alexnet_tf.weights.pretrained import assign_weights

    prefix = None
    for directory in (os.path.join(path, CHECKPOINT_SUBDIR), path):
        if tf.io.gfile.isdir(directory):
            prefix = latest_checkpoint(directory)
            if prefix:
                break
    if prefix is None and tf.io.gfile.exists(path + ".index"):
        prefix = path
    if prefix is None:
        raise ConfigError(f"no checkpoint in {path}")
    spec = read_model_spec(os.path.dirname(prefix))
    if spec is None:
        raise ConfigError(f"no model_spec.json beside {prefix}: cannot tell which model it holds")
    size = spec["image_size"]
    model = build_alexnet(
        num_classes=spec["num_classes"],
        variant=spec["variant"],
        input_shape=(size, size, 3),
        dropout_rate=0.0,
        weight_decay=0.0,
        # A model fine-tuned from imported weights keeps their input convention.
        input_conversion=spec.get("input_conversion"),
        kernel_initializer="zeros",  # every weight is assigned below, or the load is refused
    )
    values = checkpoint_weights(prefix)
    ema_decay = spec.get("ema_decay", MODEL_SPEC_DEFAULTS["ema_decay"])
    if ema_decay:
        averages = checkpoint_weights(prefix, AVERAGES_PART)
        if not averages:
            raise ConfigError(
                f"{prefix} has no weight averages, but model_spec.json beside it says the run kept them "
                f"(--ema_decay={ema_decay})"
            )
        values.update(averages)
        logging.info(
            "Using the moving averages of the weights in %s (the run trained with --ema_decay=%s), "
            "not its training weights",
            prefix,
            ema_decay,
        )
    try:
        assign_weights(model, values, where=prefix)
    except ConfigError as e:  # the checkpoint and its spec disagree: say what the spec claims
        raise ConfigError(
            f"{e} (model_spec.json beside it: {spec['variant']} variant, {spec['num_classes']} classes, "
            f"{size} x {size})"
        ) from None
    return model, prefix


# How tf.train.Checkpoint keys the value of the variable `model_weights` put under a name:
# model/<name, "." written ".." and "/" written ".S">/.ATTRIBUTES/VARIABLE_VALUE.
WEIGHTS_PART = "model"
# The training checkpoint's part that holds --ema_decay's moving averages, keyed as "model" is.
AVERAGES_PART = "average"
_VALUE_KEY_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def checkpoint_weights(prefix, part=WEIGHTS_PART):
    """{weight path: NumPy array} of the model weights (or `part`) in the training checkpoint `prefix`.

    Read by name, as `model_weights` keyed them ("conv1/kernel"), with no TensorFlow variable
    to restore into. Older checkpoints hold each weight twice (their backing tf.Variable was
    written beside the optimizer's copy); the "model/" one is read, as a restore would.
    `part=AVERAGES_PART`: the moving averages of a run with --ema_decay ({} in others).

    Raises:
      ConfigError: the checkpoint cannot be read.
    """
    start = f"{part}/"
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {
            _unescape(key[len(start) : -len(_VALUE_KEY_SUFFIX)]): reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map()
            if key.startswith(start) and key.endswith(_VALUE_KEY_SUFFIX)
        }
    except (tf.errors.OpError, ValueError, IndexError, OSError) as e:  # IndexError: a truncated data file
        raise ConfigError(f"{prefix}: cannot read the checkpoint ({_first_line(e)})") from None


def _unescape(name):
    """A tf.train.Checkpoint node name as the Python key it was given ("conv1.Skernel" -> "conv1/kernel")."""
    return re.sub(r"\.(.)", lambda match: "/" if match.group(1) == "S" else match.group(1), name)


def load_model(path):
    """(Keras model, directory to look for labels.txt in) from a `.keras` file or a training checkpoint.

    Args:
      path: a `.keras` file (one `python -m alexnet_tf.import_weights` writes, or `model.save`), or a model
        dir, checkpoints dir or checkpoint prefix written by `alexnet_tf.train`.

    Raises:
      ConfigError: nothing loadable at `path`, or a file or checkpoint without every weight of
        its model (naming the file and what is missing), in one line.
    """
    if path.endswith(".keras"):
        return read_keras_file(path), os.path.dirname(path)
    if not tf.io.gfile.exists(path) and not tf.io.gfile.exists(path + ".index"):
        raise ConfigError(f"no checkpoint or .keras file at {path}")
    model, prefix = restore_model(path)
    return model, os.path.dirname(os.path.dirname(prefix))


# What a zip archive (a .keras file) starts with: a file's local header, or an empty archive's end.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def read_keras_file(path):
    """The model of the `.keras` file `path`, with every weight read from it.

    `keras.saving.load_model` checks each layer it loads (as many weights as the layer has,
    each of its shape) and raises a multi-line ValueError otherwise; a layer it cannot find
    a place for in the file it only warns about ("Skipping nested container", Keras 3.15),
    leaving its weights at their initialisation. Both are refused here, in one line.

    Raises:
      ConfigError: no such file, not a Keras file, or weights Keras did not read.
    """
    import keras

    if not tf.io.gfile.exists(path):
        raise ConfigError(f"no such file: {path}")
    with tf.io.gfile.GFile(path, "rb") as f:
        # Keras says "File not found" for any file that is not a zip archive.
        if f.read(4) not in _ZIP_SIGNATURES:
            raise ConfigError(
                f"{path} is not a Keras file (not a zip archive): pass a .keras file written by "
                "model.save or python -m alexnet_tf.import_weights"
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = keras.saving.load_model(path, compile=False)
        except ValueError as e:
            raise ConfigError(f"{path}: cannot load it ({_keras_loading_failure(e)})") from None
    unread = [w for w in caught if f"{os.sep}saving{os.sep}" in w.filename and "keras" in w.filename]
    for w in caught:
        if w not in unread:  # not ours to judge: shown as they would have been
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if unread:
        raise ConfigError(
            f"{path}: Keras left weights of the model unread ({_first_line(unread[0].message)}); "
            "save the model again with this Keras"
        )
    return model


def _keras_loading_failure(error):
    """One line of Keras' (multi-line) message of layers whose weights it could not load."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if not lines[0].startswith("A total of") or len(lines) < 2:
        return lines[0]
    # "A total of N objects could not be loaded. Example error message for object <...>:", then
    # the first object's error (a variable's repr after "Target variable:"), then the list.
    layers = re.findall(r"<\w+ name=([^,>]+)", lines[-1])
    reason = lines[1].split(" Target variable:")[0]
    return (f"weights of {', '.join(layers)} not read: " if layers else "") + reason


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_model_spec(checkpoint_dir, spec, write):
    """Fails if `checkpoint_dir` holds checkpoints of another model; records `spec` otherwise.

    Args:
      checkpoint_dir: the run's checkpoint directory.
      spec: dict of what fixes the variables' shapes (variant, num_classes, ...).
      write: write the spec when there is none yet (the chief does).

    Raises:
      ConfigError: the stored spec differs from `spec` (a changed --ema_decay is named as such).
    """
    stored = read_model_spec(checkpoint_dir)
    if stored is not None:
        stored_value = lambda key: stored.get(key, MODEL_SPEC_DEFAULTS.get(key))
        run_value = lambda key: spec.get(key, MODEL_SPEC_DEFAULTS.get(key))
        if stored_value("ema_decay") != run_value("ema_decay"):
            kept = "weight averages" if stored_value("ema_decay") else "no weight averages"
            raise ConfigError(
                f"--ema_decay={run_value('ema_decay')}, but the checkpoints in {checkpoint_dir} were "
                f"written with --ema_decay={stored_value('ema_decay')} (they hold {kept}); nothing was "
                f"changed. Re-run with --ema_decay={stored_value('ema_decay')}, or use a new --model_dir"
            )
        differences = [
            f"{key}={stored_value(key)!r} (this run: {run_value(key)!r})"
            for key in [*spec, *(key for key in stored if key not in spec)]
            if stored_value(key) != run_value(key)
        ]
        if differences:
            raise ConfigError(
                f"{checkpoint_dir} holds checkpoints of another model: "
                f"{', '.join(differences)}; use a new --model_dir or matching flags"
            )
    elif write:
        tf.io.gfile.makedirs(checkpoint_dir)
        with tf.io.gfile.GFile(os.path.join(checkpoint_dir, MODEL_SPEC_FILENAME), "w") as f:
            json.dump(spec, f, indent=2, sort_keys=True)


class WriteDir:
    """Where this process writes `path`: the path itself on the chief, else a temporary folder.

    Use as a context manager; a non-chief's temporary folder is deleted on exit.
    """

    def __init__(self, path, chief):
        self.chief = chief
        self.path = path if chief else tempfile.mkdtemp(prefix="alexnet_tf_worker_")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.path, ignore_errors=True)


class Checkpointer:
    """Saves into the run's checkpoint dir (a temporary one on non-chief workers) and restores.

    Args:
      checkpoint: the tf.train.Checkpoint to save and restore.
      directory: `<model_dir>/checkpoints`; every worker restores from here.
      chief: whether this process owns the real directory.
      max_to_keep: how many checkpoints to keep.
      optional: names of `checkpoint`'s parts that older checkpoints may lack; such a
        checkpoint restores the rest, and those parts keep their fresh values.
    """

    def __init__(self, checkpoint, directory, chief, max_to_keep, optional=()):
        self.checkpoint = checkpoint
        self.optional = tuple(optional)
        self.directory = directory
        self._write_dir = WriteDir(directory, chief)
        self.manager = tf.train.CheckpointManager(checkpoint, self._write_dir.path, max_to_keep)

    def restore_latest(self):
        """Restores the newest checkpoint in `directory`; returns its path, or None if none."""
        path = latest_checkpoint(self.directory)
        if path is None:
            return None
        checkpoint, missing = self.checkpoint, []
        try:
            stored = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
            missing = [name for name in self.optional if name not in stored]
            if missing:
                parts = stored - {"save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"}
                checkpoint = tf.train.Checkpoint(
                    **{
                        name: getattr(self.checkpoint, name)
                        for name in parts
                        if hasattr(self.checkpoint, name)
                    }
                )
            checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, OSError, tf.errors.OpError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot resume from {path}: {first_line}") from None
        if missing:
            logging.warning(
                "%s was written by an older version, without %s: resuming without them, so not "
                "exactly as an uninterrupted run would continue.",
                path,
                ", ".join(repr(name) for name in missing),
            )
        return path

    def save(self, step):
        """Writes checkpoint `ckpt-<step>` and returns its path (a temporary one off the chief)."""
        return self.manager.save(checkpoint_number=step)

    def close(self):
        self._write_dir.cleanup()
