"""Owns pretrained-weight import: Caffe's bvlc_alexnet (as the ONNX model zoo ships it) and
torchvision's AlexNet, checked layer by layer and loaded into `build_alexnet` models.

    model = import_weights("onnx", "bvlcalexnet-12.onnx")         # -> variant "caffe"
    model = import_weights("torchvision", "alexnet.safetensors")  # -> variant "one_weird_trick"
    summary = import_to_files("onnx", "bvlcalexnet-12.onnx", "caffe.keras")

Each source has its module: `alexnet_tf.weights.onnx_zoo` (the ONNX graph's structure and
attributes) and `alexnet_tf.weights.torchvision_state` (the state_dict's keys); both fill the
model through `alexnet_tf.weights.mapping`. This module picks the source, reads labels and
writes the files `python -m alexnet_tf.import_weights` promises.

Both models start with an `input_conversion` layer (`model.InputConversion`) that turns this
project's input (RGB in [0, 255] minus `preprocessing.MEAN_RGB`, what the input
pipelines, evaluation and the serving signatures feed) into what the weights were trained on,
so `.keras` files, exports and `alexnet_tf.evaluate` need nothing special. The conventions are
`onnx_zoo.CAFFE_INPUT` (BGR minus the mean pixel of Caffe's ilsvrc_2012_mean.npy) and
`torchvision_state.TORCHVISION_INPUT` (RGB / 255, then ImageNet mean/std).

Weights are mapped by structure, never by guessing names. Conv kernels go from OIHW to HWIO
with `transpose(2, 3, 1, 0)` (grouped ones too), dense weights (out, in) are transposed, and
fc6's rows are permuted from channels-first (c, y, x) to this model's channels-last (y, x, c)
flattening. fc8's row count sets `num_classes`. Anything else raises `WeightImportError` naming
the layer and the expected shape. The weights are written by `pretrained.assign_weights`, which
refuses a model with any weight left unread. `onnx`, `onnxruntime`, `safetensors` and `torch`
are imported only when a file needs them.
"""

import hashlib
import importlib.util
import os

from alexnet_tf.data import schema
from alexnet_tf.serving import model_card
from alexnet_tf.weights.mapping import DEFAULT_CLASSES, WeightImportError, check_file
from alexnet_tf.weights.onnx_zoo import compare_with_onnxruntime, import_onnx
from alexnet_tf.weights.torchvision_state import import_torchvision

SOURCES = ("onnx", "torchvision")


def import_weights(source, path):
    """Reads `path` as `source` ("onnx" or "torchvision") and returns the loaded Keras model."""
    if source == "onnx":
        return import_onnx(path)
    if source == "torchvision":
        return import_torchvision(path)
    raise WeightImportError(f"unknown source {source!r}; choose one of {SOURCES}")


def import_to_files(source, input_path, output_path, labels_path=None, export_dir=None, verify=True):
    """Imports a weights file and writes what python -m alexnet_tf.import_weights promises.

    Args:
        source: "onnx" or "torchvision".
        input_path: the weights file (see `import_onnx`, `import_torchvision`).
        output_path: the `.keras` file to write; its labels go beside it as
            `<name>.labels.txt`.
        labels_path: class names, one per line (see `read_labels`); None uses the tfds
            ILSVRC-2012 synsets for 1000 classes.
        export_dir: if set, also writes a TF Serving SavedModel version under it
            (`alexnet_tf.serving.saved_model.export_saved_model`).
        verify: for ONNX, also run the graph in onnxruntime on random images and fail unless
            the logits agree to 1e-4 of their scale.

    Returns:
        {"model", "labels", "export", "model_card": written paths or None,
        "max_logit_difference", "max_logit": floats or None, "num_classes": int}. The model card
        (`X.MODEL_CARD.md` beside `X.keras`, and one in the export) comes from the import record
        `X.import.json` written beside it: the source, the input's sha256, the checks that ran.
    """
    if not str(output_path).endswith(".keras"):
        raise WeightImportError(f"output {output_path!r} must end in .keras")
    model = import_weights(source, input_path)
    num_classes = int(model.output_shape[-1])
    labels = read_labels(labels_path, num_classes)
    summary = {
        "model": output_path,
        "labels": None,
        "export": None,
        "num_classes": num_classes,
        "model_card": None,
        "max_logit_difference": None,
        "max_logit": None,
    }
    if verify and source == "onnx":
        difference, scale = compare_with_onnxruntime(model, input_path)
        summary.update(max_logit_difference=difference, max_logit=scale)
        if not difference <= 1e-4 * max(1.0, scale):
            raise WeightImportError(
                f"{input_path}: imported logits differ from onnxruntime's by {difference:.3g} "
                f"(logits up to {scale:.3g}); the graph computes something else"
            )
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    model.save(output_path)
    if labels is not None:
        summary["labels"] = os.path.splitext(output_path)[0] + ".labels.txt"
        with open(summary["labels"], "w", encoding="utf-8") as f:
            f.write("\n".join(labels) + "\n")
    record = import_record(source, input_path, summary)
    model_card.write_import_record(output_path, record)
    imported = {**record, "record": model_card.import_record_path(output_path)}
    summary["model_card"] = model_card.write_model_card(
        output_path,
        model,
        imported=imported,
        origin=f"Imported by `python -m alexnet_tf.import_weights --source={source}` into {output_path}.",
    )
    if export_dir:
        from alexnet_tf.serving import saved_model  # serving code only when asked

        summary["export"] = saved_model.export_saved_model(model, export_dir, labels=labels)
        model_card.write_model_card(
            summary["export"],
            model,
            imported=imported,
            origin=f"SavedModel written by `python -m alexnet_tf.import_weights` beside {output_path}.",
        )
    return summary


def import_record(source, input_path, summary):
    """What the model card of an import says: the source, the input file's sha256, the checks that ran."""
    digest = hashlib.sha256()
    with open(input_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    checks = [
        {
            "onnx": "the graph's nodes and attributes are bvlc_alexnet's, node by node "
            "(alexnet_tf.weights.onnx_zoo)",
            "torchvision": "the state_dict's keys and shapes are torchvision.models.alexnet's, entry by "
            "entry, none left over (alexnet_tf.weights.torchvision_state)",
        }[source],
        "every weight of the model was assigned a value of its shape (alexnet_tf.weights.pretrained)",
    ]
    if summary["max_logit_difference"] is not None:
        checks.append(
            f"onnxruntime ran the source graph on the same random images: max |logit difference| "
            f"{summary['max_logit_difference']:.3g} (logits up to {summary['max_logit']:.3g}; "
            "the limit is 1e-4 of that scale)"
        )
    elif source == "onnx":
        checks.append("no comparison with onnxruntime (--noverify)")
    return {
        "source": source,
        "input": os.path.abspath(input_path),
        "input_sha256": digest.hexdigest(),
        "num_classes": summary["num_classes"],
        "labels": summary["labels"],
        "checks": checks,
    }


# ----------------------------------------------------------------------------- shared


def read_labels(path=None, num_classes=DEFAULT_CLASSES):
    """Class names of an imported model, or None when there are none to use.

    Args:
        path: a text file with one label per line in class order (e.g. Caffe's
            synset_words.txt), or this project's `index<TAB>synset<TAB>name` labels.txt.
            None uses the ILSVRC-2012 synsets installed with tensorflow-datasets
            (`tensorflow_datasets/datasets/imagenet2012/labels.txt`) for 1000 classes.
        num_classes: the model's class count; the file must have as many labels.
    """
    if path is None:
        spec = importlib.util.find_spec("tensorflow_datasets")
        if num_classes != DEFAULT_CLASSES or spec is None or not spec.submodule_search_locations:
            return None
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "imagenet2012", "labels.txt")
        if not os.path.exists(path):
            return None
    check_file(path)
    # The text a model trained on the same labels file serves (schema.LabelEntry.text).
    labels = [entry.text for entry in schema.read_labels(path)]
    if len(labels) != num_classes:
        raise WeightImportError(f"{path}: {len(labels)} labels for a model with {num_classes} classes")
    return labels
