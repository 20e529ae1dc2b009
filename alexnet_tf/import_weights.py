r"""Imports pretrained AlexNet weights (Caffe's bvlc_alexnet via ONNX, or torchvision's) into Keras.

    python -m alexnet_tf.import_weights --source=onnx --input=bvlcalexnet-12.onnx \
        --output=/models/bvlc_alexnet.keras --export_dir=/models/bvlc_alexnet
    python -m alexnet_tf.import_weights --source=torchvision --input=alexnet-owt-7be5be79.pth \
        --output=/models/torchvision_alexnet.keras [--labels=synset_words.txt]

Writes the `.keras` model (load it with `keras.saving.load_model` after `import
alexnet_tf.model`), `<output>.labels.txt` (from --labels, else the ILSVRC-2012 synsets that
tensorflow-datasets installs), `<output>.MODEL_CARD.md` (the source, the checks that ran and
the weights' licence caveat, from the record `<output>.import.json`) and, with --export_dir,
a TF Serving version directory (with the same card) whose
`serving_default` takes image bytes; `python -m alexnet_tf.evaluate --saved_model=EXPORT_DIR
--data_dir=...` then gives its accuracy. Takes about 10 s on a CPU; nothing is downloaded.

--source=onnx reads the ONNX model zoo's bvlc_alexnet (Caffe -> Caffe2 -> ONNX, opset 3 to 12)
into `build_alexnet(variant="caffe")`, and (unless --noverify) runs the graph in onnxruntime
on two random images and fails unless the logits agree. --source=torchvision reads a
`torchvision.models.alexnet` state_dict (.safetensors or .npz; .pth/.pt needs PyTorch) into
`variant="one_weird_trick"`. In both, the model's first layer converts this project's input
(RGB [0, 255] minus the ImageNet mean) to the weights' own (Caffe: BGR minus Caffe's mean
pixel; torchvision: [0, 1] RGB normalised by mean/std); `alexnet_tf.weights.onnx_zoo` documents the
expected graph structure, `alexnet_tf.weights.importers` the layout conversions.

Not verified against the real downloaded files (there is no network here): the zoo graph's
exact pool padding at 224x224 (taken to be Caffe's rounded-up pooling, written by Caffe2 as
pads [0, 0, 1, 1] on pool1; any other padding is refused with a message rather than imported
wrongly), and that the zoo's weights expect Caffe's BGR, mean-pixel input (the zoo's README
gives no preprocessing). Real-data accuracy has not been measured here.
"""

import os

from absl import app, flags

from alexnet_tf import cli

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.import_weights"


def define_flags():
    """Defines the flags (only when run as a script; importing defines none)."""
    flags.DEFINE_enum("source", None, ["onnx", "torchvision"], "What --input holds.")
    flags.DEFINE_string("input", None, "The weights file: .onnx, or .safetensors/.npz/.pth/.pt.")
    flags.DEFINE_string("output", None, "The .keras file to write.")
    flags.DEFINE_string("export_dir", None, "Also write a TF Serving SavedModel version here.")
    flags.DEFINE_string(
        "labels",
        None,
        "Class names, one per line in class order (default: the "
        "ILSVRC-2012 synsets installed with tensorflow-datasets).",
    )
    flags.DEFINE_bool("verify", True, "ONNX: compare the imported logits with onnxruntime's.")
    for name in ("source", "input", "output"):
        flags.mark_flag_as_required(name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.weights import importers  # after the log level

    try:
        summary = importers.import_to_files(
            FLAGS.source,
            FLAGS.input,
            FLAGS.output,
            labels_path=FLAGS.labels,
            export_dir=FLAGS.export_dir,
            verify=FLAGS.verify,
        )
    except (ValueError, ImportError, OSError) as e:  # WeightImportError is a ValueError
        cli.fail(PROGRAM, e)  # a file, flag or missing package the user must fix
    if summary["max_logit_difference"] is not None:
        print(
            f"onnxruntime check: max |logit difference| {summary['max_logit_difference']:.2g} "
            f"(logits up to {summary['max_logit']:.3g})"
        )
    print(f"model ({summary['num_classes']} classes): {summary['model']}")
    print(f"labels: {summary['labels'] or 'none (class numbers)'}")
    print(f"model card (source, checks, licence): {summary['model_card']}")
    if summary["export"]:
        print(f"TF Serving export: {summary['export']}")
    return cli.ExitStatus.SUCCESS


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
