"""One Keras backend's side of tests/scenarios/test_backends.py: `python tests/backend_worker.py WORKDIR ...`
in a fresh process whose KERAS_BACKEND names the backend (Keras fixes it at import).

The workers of all backends run at once and meet through files in WORKDIR:

1. The one started with `--write_reference` (TensorFlow) writes, for every variant, a `.keras`
   file of `build_alexnet` with random weights drawn by NumPy, its input images, and the
   inputs of the layer checks, then `reference.done`. The others wait for that file.
2. For every variant each other worker builds `build_alexnet`, loads the reference file's
   weights into it (recording the SHA-256 of the weights and the inference logits), runs it
   in training mode, trains it one step with `compile` and `fit`, saves it as
   `<backend>_<variant>.keras` and loads that with `keras.saving.load_model` (the paper
   variant's file is loaded by the other workers instead); then it writes `<backend>.saved`.
   The TensorFlow worker does this for the paper variant only (tests/test_model.py trains
   and saves every variant on TensorFlow).
3. It checks LocalResponseNormalization (inference, training, training gradient) and
   GroupedConv2D on the fixed inputs.
4. It waits for the `.saved` file of every `--peers` backend and loads their paper-variant
   file (every layer this package defines is in it), recording the weights' hashes.
5. It writes `<backend>.json` (hashes, losses, timings, whether TensorFlow could be imported)
   and `<backend>.npz` (logits and layer outputs) for the test to compare.

With `--without_tensorflow` importing TensorFlow fails in the worker, as on a machine where
only JAX or PyTorch is installed: any use of TensorFlow by the package then fails the
worker (Keras skips its own optional TensorFlow imports, e.g. when saving).

`--checkpoint=MODEL_DIR` does only this instead: `alexnet_tf.AlexNet(weights=MODEL_DIR)`, as a
user loads a training run's model on this backend (TensorFlow installed: it reads the
checkpoint), run on WORKDIR/checkpoint_images.npy; it writes `<backend>_checkpoint.npz`
(the logits, and each weight's largest magnitude).
"""

import argparse
import gc
import hashlib
import importlib.util
import json
import os
import sys
import time

import numpy as np

if "--without_tensorflow" in sys.argv:
    # `import tensorflow` raises ImportError and importlib.util.find_spec gives None, as where
    # it is not installed.
    sys.modules["tensorflow"] = None

import keras  # noqa: E402

import alexnet_tf  # noqa: E402  registers the layers; must not import TensorFlow on another backend

BACKEND = keras.backend.backend()

# (variant, image size): the paper's and Caffe's layouts need 224; one_weird_trick pools adaptively.
VARIANTS = (("paper", 224), ("caffe", 224), ("one_weird_trick", 95))
CROSS_BACKEND_VARIANT = "paper"
NUM_CLASSES = 5
BATCH = 2
LRN_CASES = {"paper": {}, "caffe": {"depth_radius": 2, "bias": 1.0, "alpha": 1e-4 / 5, "beta": 0.75}}
GROUPED_CONV_CASES = {"groups2_same": (2, 1, "same"), "groups4_stride2_valid": (4, 2, "valid")}
WAIT_SECONDS = 600


def weights_digest(model):
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w, dtype=np.float32))
    return digest.hexdigest()


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def wait_for(workdir, backend, marker):
    """Waits for `backend`'s worker to write WORKDIR/<marker>; raises when it failed instead."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not os.path.exists(os.path.join(workdir, marker)):
        if os.path.exists(os.path.join(workdir, f"{backend}.failed")):
            raise RuntimeError(f"the {backend} worker failed before writing {marker}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} did not appear within {WAIT_SECONDS} s")
        time.sleep(0.2)


def touch(path):
    with open(path + ".tmp", "w", encoding="utf-8"):
        pass
    os.replace(path + ".tmp", path)


def write_reference(workdir):
    """Writes the reference files; returns {variant: (weights' digest, inference logits)}."""
    rng = np.random.default_rng(0)
    references = {}
    for variant, size in VARIANTS:
        model = build(variant, size)
        weights = []
        for w in model.get_weights():
            # He-scaled kernels keep activations near the inputs' size, so that LRN's
            # denominator is far from its bias and the logits are far from zero.
            scale = np.sqrt(2.0 / np.prod(w.shape[:-1])) if w.ndim > 1 else 0.1
            weights.append(rng.standard_normal(w.shape, dtype=np.float32) * np.float32(scale))
        model.set_weights(weights)
        model.save(os.path.join(workdir, f"reference_{variant}.keras"))
        # [0, 255] pixels minus the mean, as alexnet_tf.data.pipelines gives them.
        images = rng.uniform(-125.0, 130.0, (BATCH, size, size, 3)).astype(np.float32)
        np.save(os.path.join(workdir, f"images_{variant}.npy"), images)
        references[variant] = weights_digest(model), to_numpy(model(images, training=False))
        del model, weights
        gc.collect()
    np.save(os.path.join(workdir, "lrn_input.npy"), rng.normal(0.0, 60.0, (2, 5, 5, 16)).astype(np.float32))
    np.save(
        os.path.join(workdir, "lrn_cotangent.npy"), rng.normal(0.0, 1.0, (2, 5, 5, 16)).astype(np.float32)
    )
    np.save(os.path.join(workdir, "conv_input.npy"), rng.normal(0.0, 1.0, (2, 9, 9, 8)).astype(np.float32))
    touch(os.path.join(workdir, "reference.done"))
    return references


def build(variant, size):
    # Zeros: the weights come from NumPy or a file. Drawing AlexNet's 58 M random numbers
    # takes seconds with JAX's threefry on a CPU, and a file's config records this initializer,
    # so loading it does not draw them either (as alexnet_tf.weights.importers does for imported weights).
    return alexnet_tf.build_alexnet(
        num_classes=NUM_CLASSES, variant=variant, input_shape=(size, size, 3), kernel_initializer="zeros"
    )


def check_variant(workdir, variant, size):
    """Builds, runs, trains, saves and reloads one variant; returns (report entry, logits)."""
    start = time.perf_counter()
    images = np.load(os.path.join(workdir, f"images_{variant}.npy"))
    labels = np.arange(BATCH) % NUM_CLASSES
    model = build(variant, size)
    model.load_weights(os.path.join(workdir, f"reference_{variant}.keras"))
    entry = {"reference_digest": weights_digest(model)}
    logits = to_numpy(model(images, training=False))
    training_logits = to_numpy(model(images, training=True))
    # Dropout is on in training mode: the logits move, and stay finite.
    entry["training_logits_finite"] = bool(np.isfinite(training_logits).all())
    entry["training_logits_moved"] = bool(
        np.abs(training_logits - logits).max() > 1e-3 * np.abs(logits).max()
    )
    # Plain SGD keeps the saved file free of optimizer slots (half the size to write and read).
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(images, labels, batch_size=BATCH, epochs=1, verbose=0)
    entry["fit_loss"] = float(history.history["loss"][0])
    entry["saved_digest"] = weights_digest(model)
    path = os.path.join(workdir, f"{BACKEND}_{variant}.keras")
    model.save(path)
    if variant != CROSS_BACKEND_VARIANT:  # that one is loaded by the other backends' workers
        trained_logits = to_numpy(model(images))
        del model
        gc.collect()
        reloaded = keras.saving.load_model(path)
        entry["reloaded_digest"] = weights_digest(reloaded)
        entry["reloaded_logits_max_abs_diff"] = float(
            np.abs(to_numpy(reloaded(images)) - trained_logits).max()
        )
    entry["seconds"] = time.perf_counter() - start
    return entry, logits


def lrn_gradient(layer, x, cotangent):
    """d(sum(LRN(x) * cotangent)) / dx in training mode, by the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return tape.gradient(y, x, output_gradients=tf.constant(cotangent)).numpy()
    if BACKEND == "jax":
        import jax

        _, vjp = jax.vjp(lambda a: layer(a, training=True), x)
        return np.asarray(vjp(cotangent)[0])
    import torch

    x = torch.tensor(x, requires_grad=True)
    layer(x, training=True).backward(torch.tensor(cotangent))
    return x.grad.numpy()


def check_layers(workdir):
    arrays = {}
    lrn_input = np.load(os.path.join(workdir, "lrn_input.npy"))
    cotangent = np.load(os.path.join(workdir, "lrn_cotangent.npy"))
    for name, kwargs in LRN_CASES.items():
        layer = alexnet_tf.LocalResponseNormalization(**kwargs)
        arrays[f"lrn_{name}_inference"] = to_numpy(layer(lrn_input, training=False))
        arrays[f"lrn_{name}_training"] = to_numpy(layer(lrn_input, training=True))
        arrays[f"lrn_{name}_gradient"] = lrn_gradient(layer, lrn_input, cotangent)
    conv_input = np.load(os.path.join(workdir, "conv_input.npy"))
    rng = np.random.default_rng(2)
    for name, (groups, strides, padding) in GROUPED_CONV_CASES.items():
        layer = alexnet_tf.GroupedConv2D(
            12, 3, groups=groups, strides=strides, padding=padding, kernel_initializer="zeros"
        )
        layer.build(conv_input.shape)
        layer.set_weights([rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
        arrays[f"grouped_conv_{name}"] = to_numpy(layer(conv_input))
    return arrays


def load_training_checkpoint(workdir, model_dir):
    """Writes the logits of `AlexNet(weights=model_dir)` and its weights' largest magnitudes."""
    model = alexnet_tf.AlexNet(weights=model_dir)
    images = np.load(os.path.join(workdir, "checkpoint_images.npy"))
    np.savez(
        os.path.join(workdir, f"{BACKEND}_checkpoint.npz"),
        backend=np.array(BACKEND),
        logits=to_numpy(model(images, training=False)),
        weight_max_abs=np.array([np.abs(to_numpy(w)).max() for w in model.weights]),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--write_reference", action="store_true")
    parser.add_argument("--peers", default="", help="comma-separated backends whose files to load")
    parser.add_argument("--without_tensorflow", action="store_true")
    parser.add_argument("--checkpoint", help="a training model dir: only load it with AlexNet(weights=...)")
    args = parser.parse_args()
    workdir = args.workdir
    if args.checkpoint:
        load_training_checkpoint(workdir, args.checkpoint)
        return
    started = time.perf_counter()
    references = {}
    if args.write_reference:
        references = write_reference(workdir)
    else:
        wait_for(workdir, "tensorflow", "reference.done")
    report = {
        "backend": BACKEND,
        # False where --without_tensorflow hid it: everything below then ran without it.
        "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
        "variants": {},
    }
    arrays = {}
    keras.utils.set_random_seed(1)
    for variant, size in VARIANTS:
        if variant in references and variant != CROSS_BACKEND_VARIANT:
            # The reference writer (TensorFlow, whose training and saving tests/test_model.py
            # covers) only trains and saves the variant the other backends load.
            digest, arrays[f"logits_{variant}"] = references[variant]
            report["variants"][variant] = {"reference_digest": digest}
        else:
            report["variants"][variant], arrays[f"logits_{variant}"] = check_variant(workdir, variant, size)
    touch(os.path.join(workdir, f"{BACKEND}.saved"))
    arrays.update(check_layers(workdir))
    report["loaded_from_peers"] = {}
    for peer in filter(None, args.peers.split(",")):
        wait_for(workdir, peer, f"{peer}.saved")
        loaded = keras.saving.load_model(os.path.join(workdir, f"{peer}_{CROSS_BACKEND_VARIANT}.keras"))
        report["loaded_from_peers"][peer] = weights_digest(loaded)
        del loaded
        gc.collect()
    report["seconds"] = time.perf_counter() - started
    report["cpu_seconds"] = time.process_time()
    np.savez(os.path.join(workdir, f"{BACKEND}.npz"), **arrays)
    with open(os.path.join(workdir, f"{BACKEND}.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        touch(os.path.join(sys.argv[1], f"{BACKEND}.failed"))  # the peers stop waiting for this one
        raise
