"""Starting a run from other weights (`--init_from`, fine-tuning): whether to, what, and copying them in.

`plan` decides before the model is built. A model dir that already holds checkpoints resumes
from them and ignores --init_from (with a log line), so a preempted fine-tuning job continues
instead of starting over. Otherwise the source is loaded (`checkpointing.load_model`: a
`.keras` file such as python -m alexnet_tf.import_weights writes, or a training checkpoint or model dir)
and must be an AlexNet of the run's variant. The run's model takes the source's input
convention (its InputConversion layer: imported Caffe or torchvision weights expect their own
pixels); the model spec beside the checkpoints records it, so resuming, `alexnet_tf.evaluate`
and `alexnet_tf.export` rebuild the same model.

`initialise` copies every weight but fc8's by name (`pretrained.copy_weights`); fc8 keeps its
fresh initialisation for the run's classes (a new label set is a new head, even with the same
class count). A weight missing from the source, or of another shape, stops the run with a
ConfigError naming it (and both shapes), before anything is written to the model dir; so does a
source that cannot be read whole (`checkpointing.load_model`).
"""

import dataclasses
import json
import math
import os
from typing import Optional

from absl import logging
import keras
import tensorflow as tf

from alexnet_tf.config import CONFIG_FILENAME, ConfigError
from alexnet_tf.model import HEAD_LAYER, normalize_input_conversion
from alexnet_tf.weights import pretrained
from alexnet_tf.weights.checkpointing import (
    MODEL_SPEC_DEFAULTS,
    latest_checkpoint,
    load_model,
    read_model_spec,
)
from alexnet_tf.weights.torchvision_state import TORCHVISION_INPUT


@dataclasses.dataclass(frozen=True)
class Start:
    """How a run starts: from `source`'s weights (None: fresh or resumed) with `input_conversion`.

    `from_weights`: the run began from --init_from's weights (now, or at its first start when it
    resumes), so its input convention is theirs, not --input_convention's.
    """

    source: Optional[keras.Model]
    input_conversion: Optional[dict]
    from_weights: bool = False

    @property
    def convention(self):
        """The `--input_convention` name of `input_conversion`, or None (e.g. Caffe's BGR)."""
        return next(
            (name for name in CONVENTIONS if convention_conversion(name) == self.input_conversion), None
        )


def first_start_init_from(model_dir):
    """The --init_from that <model_dir>/config.json says the run began with ("" none; None: unknown)."""
    try:
        with tf.io.gfile.GFile(os.path.join(model_dir, CONFIG_FILENAME)) as f:
            stored = json.load(f)
        return stored.get("init_from") or "" if isinstance(stored, dict) else None
    except (tf.errors.OpError, ValueError):
        return None


def plan(config, checkpoint_dir):
    """The run's Start: resume (the stored input convention), --init_from's weights, or fresh.

    Raises:
      ConfigError: --init_from cannot be loaded, is no AlexNet, or is another variant.
    """
    if latest_checkpoint(checkpoint_dir):
        if config.init_from:
            logging.info(
                "--init_from=%s ignored: %s already holds checkpoints of this run; resuming from them.",
                config.init_from,
                checkpoint_dir,
            )
        stored = read_model_spec(checkpoint_dir) or {}
        model_dir = os.path.dirname(os.path.normpath(checkpoint_dir))
        # A run that began from weights has their convention whatever the flags say; config.json
        # says whether it did (runs older than config.json: the flag given now decides).
        began_from = first_start_init_from(model_dir)
        from_weights = bool(config.init_from if began_from is None else began_from)
        start = Start(None, stored.get("input_conversion"), from_weights)
        if not from_weights and start.convention != config.input_convention:
            raise ConfigError(
                f"--input_convention={config.input_convention} (--recipe={config.recipe}), but the run "
                f"in {model_dir} was started with "
                + (
                    f"--input_convention={start.convention}"
                    if start.convention
                    else f"the input conversion {start.input_conversion}"
                )
                + ": its checkpoints take that input; re-run with that convention (or the recipe it "
                "started with), or use a new --model_dir"
            )
        return start
    if not config.init_from:
        return Start(None, convention_conversion(config.input_convention))
    where = f"--init_from={config.init_from}"
    try:
        source, _ = load_model(config.init_from)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (ValueError, OSError, tf.errors.OpError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where}: cannot load it ({first_line})") from None
    info = pretrained.describe(source)
    if info.variant is None:
        raise ConfigError(f"{where}: not an AlexNet (no layers conv1..conv5)")
    if info.variant != config.variant:
        raise ConfigError(
            f"{where} holds a {info.variant} AlexNet but --variant={config.variant}: "
            f"pass --variant={info.variant}"
        )
    wanted = convention_conversion(config.input_convention)
    if info.input_conversion != wanted:
        logging.info(
            "%s: the run takes the input convention of these weights (%s), not "
            "--input_convention=%s's: weights are tied to the pixels they learnt on.",
            where,
            "the project's 0-255 pixels" if info.input_conversion is None else info.input_conversion,
            config.input_convention,
        )
    return Start(source, info.input_conversion, from_weights=True)


# --input_convention's values: the InputConversion arguments of the model's first layer (None: none).
CONVENTIONS = {"paper": None, "torchvision": TORCHVISION_INPUT}


def convention_conversion(convention):
    """What `--input_convention=convention` puts first in a fresh model, as a model spec holds it."""
    return normalize_input_conversion(CONVENTIONS[convention])


def model_spec(config, num_classes, start):
    """The model spec of the run (checkpointing.check_model_spec): what fixes its variables."""
    spec = {"variant": config.variant, "num_classes": num_classes, "image_size": config.image_size}
    # The optimizer's slots exist for the trainable weights only, so `trainable` fixes them too.
    # --ema_decay adds the averages to the checkpoints, and tells evaluate and export to use them.
    extra = {
        "input_conversion": start.input_conversion,
        "trainable": config.trainable,
        "ema_decay": config.ema_decay,
    }
    spec.update({k: v for k, v in extra.items() if v != MODEL_SPEC_DEFAULTS[k]})
    return spec


def initialise(config, start, model, strategy):
    """Copies the source's weights into `model`, all but fc8's; logs what trains."""
    with strategy.scope():
        copied = pretrained.copy_weights(
            start.source, model, skip=(HEAD_LAYER,), where=f"--init_from={config.init_from}"
        )
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    total = sum(math.prod(v.shape) for v in model.weights)
    logging.info(
        "Initialised %d weights from %s; %s is new for %d classes. "
        "--trainable=%s: %s of %s parameters train.",
        len(copied),
        config.init_from,
        HEAD_LAYER,
        int(model.output_shape[-1]),
        config.trainable,
        f"{trainable:,}",
        f"{total:,}",
    )
