"""The model card: `MODEL_CARD.md`, generated from what a training run, an export or an import recorded.

keras-hub writes a model card when it saves a preset; torchvision keeps each weight's recipe,
metrics and parameter count. Here `write_model_card` renders one from the files that sit beside
the model, never from figures typed by hand:

    <model_dir>/config.json              the run's configuration: the recipe, the data dir
    <model_dir>/results.json             the run's end: final validation, throughput, precision
    <model_dir>/validation_history.json  every epoch's validation (the best epoch comes from it)
    <model_dir>/corruptions.json         `evaluate --corruptions`' report, when one was run
    <data_dir>/manifest.json             the data: fingerprint, classes, images per split
    <name>.import.json                   beside an imported `.keras` file: its source and checks

and from the model itself (parameter count, input size, its input conversion layer) and the
model spec its caller passes (`weights.checkpointing` owns `model_spec.json`). Every file is read
tolerantly: a figure no file holds reads "not measured yet", so a run killed before its first
epoch still gets a card. The trainer rewrites the card in its model dir at each epoch end and at
the run's end; `python -m alexnet_tf.export` writes one into each SavedModel version and beside
an ONNX file; `python -m alexnet_tf.import_weights` writes one beside the `.keras` file.
A folder (model dir, version dir) holds `MODEL_CARD.md`; a single-file model `X.keras` or
`X.onnx` has `X.MODEL_CARD.md` beside it, as its labels are `X.labels.txt`.
"""

import json
import math
import os

import tensorflow as tf

from alexnet_tf.config import CONFIG_FILENAME
from alexnet_tf.data import preprocessing, schema
from alexnet_tf.model import variant_of

MODEL_CARD_FILENAME = "MODEL_CARD.md"
RESULTS_FILENAME = "results.json"
HISTORY_FILENAME = "validation_history.json"
CORRUPTIONS_FILENAME = "corruptions.json"
IMPORT_RECORD_SUFFIX = ".import.json"
NOT_MEASURED = "not measured yet"

# The terms imported weights come with (docs/training.md, "Pretrained weights"), by importer source.
IMAGENET_TERMS = (
    "The weights were trained on ILSVRC-2012 (ImageNet), whose terms of access allow the images "
    "to be used for non-commercial research and education only; whether those terms bind weights "
    "trained on the images is not settled."
)
LICENCE_NOTES = {
    "onnx": (
        "Caffe's BVLC AlexNet (`bvlc_alexnet`), as the ONNX model zoo ships it. Caffe's "
        "`models/bvlc_alexnet/readme.md` releases the model for unrestricted use; check the terms "
        "of the zoo copy you downloaded. " + IMAGENET_TERMS
    ),
    "torchvision": (
        "torchvision's AlexNet weights. torchvision's code is BSD-3-Clause, but its README says "
        "that its pre-trained models may carry their own licences or terms derived from the data "
        "they were trained on, and that it is the user's responsibility to determine whether they "
        "may use them for their use case. " + IMAGENET_TERMS
    ),
}
UNKNOWN_LICENCE = "Weights from an unknown source: their terms are not recorded. " + IMAGENET_TERMS
TRAINED_HERE_TERMS = (
    "The weights were trained by this run; any terms that come with its training images apply to "
    "them (for ILSVRC-2012: non-commercial research and education)."
)


# ----------------------------------------------------------------------------- the records


def read_json(path, kind=dict):
    """The JSON value of `path` when it is a `kind`; None when missing, unreadable or of another type."""
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            value = json.load(f)
    except (tf.errors.OpError, OSError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def _write_text(path, text):
    """Writes `text` whole or not at all (a temporary file renamed over `path`)."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def read_records(model_dir):
    """{"config", "results", "history", "corruptions"} of a model dir: each None where absent."""
    return {
        "config": read_json(os.path.join(model_dir, CONFIG_FILENAME)),
        "results": read_json(os.path.join(model_dir, RESULTS_FILENAME)),
        "history": read_json(os.path.join(model_dir, HISTORY_FILENAME), list),
        "corruptions": read_json(os.path.join(model_dir, CORRUPTIONS_FILENAME)),
    }


def record_validation(model_dir, entry):
    """Adds one epoch's validation to <model_dir>/validation_history.json; returns the history.

    `entry` is {"epoch", "step", "validation": {"loss", "top1", "top5", "count"}, ...}. Entries of
    this epoch or later are replaced: a run resumed from an earlier checkpoint evaluates them again.
    """
    history = read_json(os.path.join(model_dir, HISTORY_FILENAME), list) or []
    history = [e for e in history if isinstance(e, dict) and e.get("epoch", math.inf) < entry["epoch"]]
    history.append(entry)
    _write_text(os.path.join(model_dir, HISTORY_FILENAME), json.dumps(history, indent=1) + "\n")
    return history


def card_path(path):
    """Where `path`'s card goes: MODEL_CARD.md inside a folder, `X.MODEL_CARD.md` beside a file `X.ext`."""
    if tf.io.gfile.isdir(path):
        return os.path.join(path, MODEL_CARD_FILENAME)
    return os.path.splitext(path)[0] + "." + MODEL_CARD_FILENAME


def import_record_path(keras_path):
    """The import record beside an imported `.keras` file: `X.keras` -> `X.import.json`."""
    return os.path.splitext(keras_path)[0] + IMPORT_RECORD_SUFFIX


def write_import_record(keras_path, record):
    """Writes what an import did ({"source", "input", "checks", ...}) beside its `.keras` file."""
    _write_text(import_record_path(keras_path), json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_import_record(path):
    """The import record of a `.keras` file, or None (not a `.keras` path, or not an imported model)."""
    if not isinstance(path, str) or not path.endswith(".keras"):
        return None
    record = read_json(import_record_path(path))
    return None if record is None else {**record, "record": import_record_path(path)}


# ----------------------------------------------------------------------------- rendering


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value):
    """A markdown table cell: JSON for non-strings, `|` escaped, never empty."""
    text = value if isinstance(value, str) else json.dumps(value)
    return (text or '""').replace("|", "\\|").replace("\n", " ")


def accuracy_text(values, key):
    """`62.50% (5 of 8)`: an accuracy of a validation dict with its hits, or "not measured yet"."""
    value = values.get(key) if isinstance(values, dict) else None
    if not _number(value):
        return NOT_MEASURED
    count = values.get("count")
    hits = f" ({round(value * count)} of {round(count)})" if _number(count) and count > 0 else ""
    return f"{100 * value:.2f}%{hits}"


def _validation_row(name, values, where):
    loss = values.get("loss") if isinstance(values, dict) else None
    return (
        f"| {name} | {accuracy_text(values, 'top1')} | {accuracy_text(values, 'top5')} | "
        f"{f'{loss:.4f}' if _number(loss) else '-'} | {where} |"
    )


def _valid_history(history):
    return [
        e
        for e in history or []
        if isinstance(e, dict)
        and isinstance(e.get("validation"), dict)
        and _number(e["validation"].get("top1"))
    ]


def best_epoch(history):
    """The history entry with the highest centre-crop top-1 (the earlier one on ties), or None."""
    entries = _valid_history(history)
    return max(entries, key=lambda e: (e["validation"]["top1"], -e.get("step", 0))) if entries else None


def _variant(model, spec):
    """The model spec's variant, else the one the model's layers show, else "not recorded"."""
    if isinstance(spec, dict) and spec.get("variant"):
        return str(spec["variant"])
    return (variant_of(model) if model is not None else None) or "not recorded"


def _hardware_text(hardware):
    if not isinstance(hardware, dict):
        return "not recorded"
    gpus = hardware.get("gpus") or []
    cpu = hardware.get("cpu") or "an unnamed CPU"
    text = f"{cpu}, {hardware.get('cpu_count', '?')} logical CPUs"
    text += ", oneDNN kernels on" if hardware.get("onednn") else ""
    if gpus:
        counts = {name: gpus.count(name) for name in gpus}
        text = ", ".join(f"{n} x {name}" for name, n in counts.items()) + f"; host {text}"
    return text


def _conversion_text(model):
    """What the model's input_conversion layer turns its input into, or None when it has none."""
    try:
        layer = model.get_layer("input_conversion")
    except (AttributeError, ValueError):
        return None
    config = layer.get_config()
    order = str(config.get("channel_order", "rgb")).upper()
    scale = config.get("scale", 1.0)
    units = "[0, 1]" if _number(scale) and abs(scale * 255 - 1) < 1e-6 else "[0, 255]"
    mean = ", ".join(f"{m:g}" for m in config.get("mean", ()))
    std = ", ".join(f"{s:g}" for s in config.get("std", ()))
    return f"{order} in {units}, minus ({mean}), divided by ({std})"


def _section_model(lines, model, spec, config):
    lines += ["## Model", ""]
    count = model.count_params() if model is not None else None
    lines.append(f"- variant: `{_variant(model, spec)}`")
    lines.append(f"- parameters: {f'{count:,}' if count is not None else NOT_MEASURED}")
    classes = int(model.output_shape[-1]) if model is not None else (spec or {}).get("num_classes")
    lines.append(f"- classes: {classes if classes is not None else NOT_MEASURED}")
    if isinstance(config, dict) and config.get("trainable", "all") != "all":
        lines.append(
            f"- layers trained: `{config['trainable']}` (--trainable); the others kept their weights"
        )
    if isinstance(config, dict) and _number(config.get("ema_decay")) and config["ema_decay"] > 0:
        lines.append(
            f"- weights: the moving averages of the trained weights (--ema_decay={config['ema_decay']:g})"
        )
    lines.append("")


def _section_data(lines, config, manifest, data_error, results):
    lines += ["## Data", ""]
    if not isinstance(config, dict):
        lines += ["Not recorded: this model was not trained here (no config.json).", ""]
        return
    source = config.get("data_source", "tfrecord")
    lines.append(f"- source: `{source}`" + (f", `{config['data_dir']}`" if config.get("data_dir") else ""))
    if data_error:
        lines.append(f"- manifest: {data_error}")
    elif manifest:
        lines.append(f"- manifest fingerprint: `{manifest.get('fingerprint', 'not recorded')}`")
        lines.append(f"- classes: {manifest.get('num_classes', 'not recorded')}")
        splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}
        for split in sorted(splits):
            size = schema.split_size(manifest, split)
            lines.append(f"- {split} images: {f'{size:,}' if size is not None else 'not recorded'}")
        if manifest.get("complete") is False:
            lines.append("- the conversion was not complete when this card was written")
    elif source == "tfrecord":
        lines.append(f"- manifest: no {schema.MANIFEST_FILENAME} in the data dir")
    validation = (results or {}).get("validation") if isinstance(results, dict) else None
    if isinstance(validation, dict) and _number(validation.get("count")):
        lines.append(f"- images in each validation: {round(validation['count']):,}")
    lines.append("")


def _section_validation(lines, results, history, ema):
    lines += ["## Validation", ""]
    note = " Figures are of the weights' moving averages (--ema_decay)." if ema else ""
    lines += [
        "Top-k counts an image when its label is strictly among the k best scores (docs/training.md, "
        f'"Evaluate").{note}',
        "",
        "| | top-1 | top-5 | loss | where |",
        "|---|---|---|---|---|",
    ]
    entries = _valid_history(history)
    last_step = max((e.get("step", 0) for e in entries), default=-1)
    final = results if isinstance(results, dict) and results.get("global_step", -1) >= last_step else None
    if final is not None:
        where = f"step {final.get('global_step')}, epoch {final.get('epochs_completed')}"
        lines.append(_validation_row("final, centre crop", final.get("validation") or {}, where))
        ten_crop = final.get("validation_ten_crop") or {}
        lines.append(
            _validation_row("final, ten crops", ten_crop, where if ten_crop else "not run (--ten_crop_eval)")
        )
    else:
        progress = f" (in progress: {len(entries)} epochs validated)" if entries else ""
        lines.append(f"| final, centre crop | {NOT_MEASURED}{progress} | | | |")
        lines.append(f"| final, ten crops | {NOT_MEASURED} | | | |")
    best = best_epoch(history)
    if final is not None and isinstance(final.get("validation"), dict):
        # A run that --train_steps stopped inside an epoch ends with a validation no epoch holds.
        steps = {e.get("step") for e in entries}
        if final.get("global_step") not in steps and _number(final["validation"].get("top1")):
            if best is None or final["validation"]["top1"] > best["validation"]["top1"]:
                best = {"step": final.get("global_step"), "validation": final["validation"], "final": True}
    if best is None:
        lines.append(f"| best, centre crop | {NOT_MEASURED} | | | |")
    else:
        where = f"step {best.get('step')}, epoch {best.get('epoch')}"
        if best.get("final"):
            where = f"step {best.get('step')}" + ("" if entries else " (the only validation recorded)")
        lines.append(_validation_row("best, centre crop", best["validation"], where))
    lines.append("| best, ten crops | ten crops are measured only at the run's end | | | |")
    lines.append("")
    if entries:
        lines += [
            "<details><summary>Every epoch's validation (centre crop)</summary>",
            "",
            "| epoch | step | top-1 | top-5 | loss | training images/s |",
            "|---|---|---|---|---|---|",
        ]
        for e in entries:
            speed = e.get("train_images_per_sec")
            loss = e["validation"].get("loss")
            lines.append(
                f"| {e.get('epoch')} | {e.get('step')} | {accuracy_text(e['validation'], 'top1')} | "
                f"{accuracy_text(e['validation'], 'top5')} | {f'{loss:.4f}' if _number(loss) else '-'} | "
                f"{f'{speed:.1f}' if _number(speed) and speed > 0 else '-'} |"
            )
        lines += ["", "</details>", ""]


def _section_corruptions(lines, corruptions):
    """The corruption benchmark's figures, as `python -m alexnet_tf.evaluate --corruptions` wrote them."""
    if not isinstance(corruptions, dict):
        return
    lines += ["## Corruptions (ImageNet-C)", ""]
    clean = corruptions.get("clean") if isinstance(corruptions.get("clean"), dict) else {}

    def percent(value):
        return f"{100 * value:.2f}" if _number(value) else "not computed"

    normalised = corruptions.get("normalised")
    count = f" ({int(clean['count'])} images)" if _number(clean.get("count")) else ""
    lines.append(f"- clean top-1 error: {percent(clean.get('top1_error'))}%{count}")
    if normalised:
        lines.append(f"- mCE: {percent(corruptions.get('mce'))} (100: AlexNet's published robustness)")
        lines.append(f"- relative mCE: {percent(corruptions.get('relative_mce'))}")
    else:
        lines.append(
            f"- mean top-1 error over the corruptions: {percent(corruptions.get('mce'))}% (not ImageNet: "
            "not normalised by AlexNet's errors)"
        )
    table, severities = {}, set()
    for entry in corruptions.get("results") or []:
        if not isinstance(entry, dict) or not _number(entry.get("top1_error")):
            continue
        name, severity = str(entry.get("corruption")), entry.get("severity")
        table.setdefault(name, {})[severity] = entry["top1_error"]
        severities.add(severity)
    if table:
        columns = sorted(severities, key=lambda s: (not _number(s), s if _number(s) else 0, str(s)))
        lines += [
            "",
            "Top-1 error (%) per corruption and severity:",
            "",
            "| corruption | " + " | ".join(f"severity {s}" for s in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for name in table:
            cells = [f"{100 * table[name][s]:.2f}" if s in table[name] else "-" for s in columns]
            lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    notes = [n for n in corruptions.get("notes") or [] if isinstance(n, str)]
    if notes:
        lines += [""] + [f"- {_cell(note)}" for note in notes]
    lines.append("")


def _section_speed(lines, results, history, hardware):
    lines += ["## Training speed and hardware", ""]
    entries = _valid_history(history)
    if isinstance(results, dict) and _number(results.get("images_per_sec")) and results["images_per_sec"] > 0:
        lines.append(
            f"- training throughput: {results['images_per_sec']:.1f} images/s (the run's last logging "
            "interval)"
        )
    elif entries and _number(entries[-1].get("train_images_per_sec")):
        lines.append(
            f"- training throughput: {entries[-1]['train_images_per_sec']:.1f} images/s (epoch "
            f"{entries[-1].get('epoch')}'s last logging interval)"
        )
    else:
        lines.append(f"- training throughput: {NOT_MEASURED}")
    if isinstance(results, dict):
        lines.append(
            f"- precision: {results.get('precision', 'not recorded')}, "
            f"replicas: {results.get('num_replicas', 'not recorded')}"
        )
    seen = []  # (hardware text, first epoch, last epoch), in the order the run met them
    for e in entries:
        text = _hardware_text(e.get("hardware"))
        if seen and seen[-1][0] == text:
            seen[-1][2] = e.get("epoch")
        else:
            seen.append([text, e.get("epoch"), e.get("epoch")])
    if not seen and hardware is not None:
        seen.append([_hardware_text(hardware), None, None])
    if not seen:
        lines.append("- trained on: not recorded")
    for text, first, last in seen:
        epochs = (
            "" if first is None else f" (epoch {first})" if first == last else f" (epochs {first}-{last})"
        )
        lines.append(f"- trained on: {text}{epochs}")
    lines.append("")


def _section_input(lines, model, config):
    size = int(model.input_shape[1]) if model is not None and model.input_shape[1] else None
    if size is None and isinstance(config, dict):
        size = config.get("image_size")
    mean = ", ".join(f"{m:g}" for m in preprocessing.MEAN_RGB)
    side = preprocessing.RESIZE_SHORTER
    lines += [
        "## Input",
        "",
        f"- the model takes {size or '?'}x{size or '?'} RGB crops in [0, 255] minus the mean pixel ({mean}), "
        "float32, channels last; evaluation resizes the image's central square to "
        f"{side}x{side} and takes its centre crop (or ten crops)",
        "- a SavedModel's `serving_default` takes encoded images (JPEG, PNG, ...) and does all of that "
        "itself (docs/serving.md)",
    ]
    conversion = _conversion_text(model) if model is not None else None
    if conversion:
        lines.append(
            f"- its first layer (`input_conversion`) turns that into what its weights expect: {conversion}"
        )
    if isinstance(config, dict) and config.get("input_convention"):
        lines.append(f"- training input convention: `{config['input_convention']}` (--input_convention)")
    lines.append("")


def _section_licence(lines, imported, init_import, config):
    lines += ["## Licence of the weights", ""]
    if imported is not None:
        lines.append(LICENCE_NOTES.get(imported.get("source"), UNKNOWN_LICENCE))
    elif init_import is not None:
        lines.append(
            f"Fine-tuned from imported weights (`{config.get('init_from')}`), whose terms carry over: "
            + LICENCE_NOTES.get(init_import.get("source"), UNKNOWN_LICENCE)
        )
    else:
        lines.append(TRAINED_HERE_TERMS)
    lines.append("")


def _section_import(lines, imported):
    lines += ["## Import", ""]
    lines.append(f"- source: `{imported.get('source', 'not recorded')}`, from `{imported.get('input', '?')}`")
    if imported.get("input_sha256"):
        lines.append(f"- input file sha256: `{imported['input_sha256']}`")
    for check in imported.get("checks") or []:
        lines.append(f"- check: {check}")
    lines.append("")


def _section_recipe(lines, config):
    lines += ["## Recipe", ""]
    if not isinstance(config, dict):
        lines += ["Not recorded (no config.json): this model was not trained by `alexnet_tf.train`.", ""]
        return
    lines += [
        "The run's whole configuration as it started (its config.json), one flag a row; a resumed run "
        "logs the flags it was resumed with that differ:",
        "",
        "| flag | value |",
        "|---|---|",
    ]
    lines += [f"| `--{name}` | {_cell(config[name])} |" for name in sorted(config)]
    lines.append("")


def render_model_card(
    model=None,
    *,
    title="AlexNet",
    origin="",
    spec=None,
    config=None,
    results=None,
    history=None,
    corruptions=None,
    manifest=None,
    data_error="",
    imported=None,
    init_import=None,
    hardware=None,
    sources=(),
    this_file=None,
):
    """The markdown of a model card from these records (each may be None: "not measured yet").

    Args:
      model: the Keras model (parameter count, classes, input size and conversion), or None.
      title: the card's heading.
      origin: one sentence on what wrote this card and where the model is.
      spec: the model spec dict (model_spec.json), for the variant.
      config, results, history, corruptions: the parsed config.json, results.json,
        validation_history.json (a list) and corruptions.json of the run.
      manifest: the parsed manifest.json of the run's data dir; `data_error` says why there is none.
      imported: the import record of imported weights (`write_import_record`), or None.
      init_import: the import record of the weights a fine-tuning run started from, or None.
      hardware: `alexnet_tf.hardware.describe()` of the machine when the history records none.
      sources: (name, present) of each record file, listed at the end.
      this_file: None, or lines on an exported file whose input or arithmetic is not the Keras
        model's (a LiteRT file): they open the card and replace its Input section.
    """
    ema = isinstance(results, dict) and _number(results.get("ema_decay")) and results["ema_decay"] > 0
    ema = ema or (isinstance(config, dict) and _number(config.get("ema_decay")) and config["ema_decay"] > 0)
    lines = [
        f"# {title}",
        "",
        "Generated by alexnet_tf from the records listed at the end; it is rewritten, do not edit it.",
    ]
    lines += [origin, ""] if origin else [""]
    if this_file:
        lines += ["## This file", ""] + [f"- {line}" for line in this_file] + [""]
    _section_model(lines, model, spec, config)
    if imported is not None:
        _section_import(lines, imported)
    _section_data(lines, config, manifest, data_error, results)
    if isinstance(config, dict) or results is not None or history:
        _section_validation(lines, results, history, ema)
    else:
        lines += ["## Validation", "", f"{NOT_MEASURED}: `python -m alexnet_tf.evaluate` measures it.", ""]
    _section_corruptions(lines, corruptions)
    if isinstance(config, dict):
        _section_speed(lines, results, history, hardware)
    if not this_file:
        _section_input(lines, model, config)
    _section_licence(lines, imported, init_import, config)
    if isinstance(config, dict):
        _section_recipe(lines, config)
    if sources:
        lines += ["## Records", ""]
        lines += [f"- `{name}`{'' if present else ': absent'}" for name, present in sources]
        lines.append("")
    return "\n".join(lines)


def _manifest_of(config):
    """(parsed manifest or None, why there is none) of the data dir a config.json names."""
    if not isinstance(config, dict) or config.get("data_source", "tfrecord") != "tfrecord":
        return None, ""
    data_dir = config.get("data_dir")
    if not data_dir:
        return None, "no data dir recorded"
    try:
        manifest = schema.read_manifest(data_dir)
    except (ValueError, tf.errors.OpError) as e:
        return None, f"unreadable ({e})"
    if not manifest and not tf.io.gfile.isdir(data_dir):
        return None, f"{data_dir} is not readable here"
    return manifest or None, ""


def write_model_card(
    path,
    model=None,
    *,
    records_dir=None,
    results=None,
    spec=None,
    imported=None,
    hardware=None,
    title=None,
    origin="",
    this_file=None,
):
    """Renders the card of the model at `path` from its records and writes it (`card_path(path)`).

    Args:
      path: a model dir, a SavedModel version dir (folders: MODEL_CARD.md inside), or a `.keras`
        or `.onnx` file (`X.MODEL_CARD.md` beside it).
      model: the Keras model, or None.
      records_dir: the model dir whose records (config.json, results.json, ...) describe the
        model; None: `path` itself when it is a folder, else none (an imported or saved file).
      results: the run's TrainResult dict, when it is not (yet) in results.json.
      spec, imported, hardware, title, origin, this_file: as `render_model_card` takes them.

    Returns:
      The path of the card.
    """
    if records_dir is None and tf.io.gfile.isdir(path):
        records_dir = path
    records = read_records(records_dir) if records_dir else dict.fromkeys(("config", "results", "history"))
    if results is not None:
        records["results"] = results
    config = records["config"]
    manifest, data_error = _manifest_of(config)
    init_import = read_import_record(config.get("init_from")) if isinstance(config, dict) else None
    sources = []
    if records_dir:
        names = (CONFIG_FILENAME, RESULTS_FILENAME, HISTORY_FILENAME, CORRUPTIONS_FILENAME)
        keys = ("config", "results", "history", "corruptions")
        sources = [(os.path.join(records_dir, n), records.get(k) is not None) for n, k in zip(names, keys)]
    if (
        isinstance(config, dict)
        and config.get("data_source", "tfrecord") == "tfrecord"
        and config.get("data_dir")
    ):
        sources.append((os.path.join(config["data_dir"], schema.MANIFEST_FILENAME), manifest is not None))
    if imported is not None:
        sources.append((imported.get("record", "import record"), True))
    text = render_model_card(
        model,
        title=title or f"AlexNet ({_variant(model, spec)})",
        origin=origin,
        spec=spec,
        config=config,
        results=records["results"],
        history=records["history"],
        corruptions=records.get("corruptions"),
        manifest=manifest,
        data_error=data_error,
        imported=imported,
        init_import=init_import,
        hardware=hardware,
        sources=sources,
        this_file=this_file,
    )
    target = card_path(path)
    _write_text(target, text)
    return target
