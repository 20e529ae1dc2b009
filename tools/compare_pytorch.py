"""Times alexnet_tf against the same AlexNet in PyTorch on this CPU, alternately, in one run.

    pip install torch==2.13.0     # optional, never a dependency of alexnet_tf
    python tools/compare_pytorch.py [--variant=paper] [--batch_size=128] [--steps=3] [--repeats=3]

For each framework and precision (float32; bfloat16: Keras `mixed_bfloat16`, PyTorch
`torch.autocast("cpu", torch.bfloat16)` with channels_last), one training step is SGD with
momentum 0.9 and weight decay 5e-4 on a fixed in-memory batch. The candidates are timed
round-robin, `--repeats` times `--steps` steps each, so machine noise hits all of them alike;
medians are reported with the TensorFlow / PyTorch ratio per precision. On x86-64 TensorFlow
runs oneDNN's kernels, as the package's training commands do, unless TF_ENABLE_ONEDNN_OPTS is
set (`TF_ENABLE_ONEDNN_OPTS=0` times the Eigen kernels); the header line says which.

The PyTorch models are the same architectures: "paper" with LRN (PyTorch divides alpha by the
window size, so alpha=5e-4 there equals the paper's 1e-4) and groups=2 in conv2/4/5 on a
224 input padded by 2; "one_weird_trick" is torchvision's layout.

Before/after figures: run it with an older checkout first on PYTHONPATH, e.g.
`git worktree add /tmp/before fe1a50a && PYTHONPATH=/tmp/before python tools/compare_pytorch.py`
(fe1a50a: the first complete model, with TensorFlow's LRN op in training, Keras' SGD and
the weight decay as an L2 loss).
"""

import json
import statistics
import time

from absl import app, flags

flags.DEFINE_enum("variant", "paper", ["paper", "one_weird_trick"], "AlexNet variant.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 3, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Round-robin repeats; medians are reported.")
flags.DEFINE_multi_enum("precision", ["float32", "bfloat16"], ["float32", "bfloat16"], "Precisions.")
flags.DEFINE_bool("json", False, "Print JSON.")
FLAGS = flags.FLAGS


def torch_alexnet(torch, variant, num_classes=1000):
    """The same network in PyTorch (NCHW weights, channels_last memory format)."""
    nn = torch.nn
    if variant == "paper":
        features = [
            nn.ZeroPad2d(2),
            nn.Conv2d(3, 96, 11, stride=4),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        ]
    else:
        features = [
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.AdaptiveAvgPool2d((6, 6)),
        ]
    classifier = [
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(9216, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    ]
    return nn.Sequential(*features, *classifier)


def torch_step_fn(torch, variant, precision, images, labels):
    model = torch_alexnet(torch, variant).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype("int64"))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def tf_step_fn(keras, tf, variant, precision, images, labels):
    from alexnet_tf.model import build_alexnet

    try:  # as the trainer: weight decay 5e-4 inside MomentumSGD's fused update
        from alexnet_tf.optim import MomentumSGD

        make = lambda: (
            build_alexnet(variant=variant, weight_decay=0.0),  # noqa: E731
            MomentumSGD(0.01, momentum=0.9, l2=5e-4),
        )
    except ImportError:  # an older checkout on PYTHONPATH, for before/after figures: L2 in the loss
        make = lambda: (build_alexnet(variant=variant), keras.optimizers.SGD(0.01, momentum=0.9))  # noqa: E731

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        model, optimizer = make()
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
    iterator = iter(data)
    model.make_train_function()

    def step():
        return float(model.train_function(iterator)["loss"])

    return step


def main(argv):
    del argv
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import platform

    # The package's training commands turn oneDNN's CPU kernels on on x86-64 unless the user set
    # TF_ENABLE_ONEDNN_OPTS (alexnet_tf.hardware.command_onednn_default); this script is not one
    # of them, so it does the same here, before TensorFlow is imported, to time what users get.
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        import torch
    except ImportError:
        print("tools/compare_pytorch.py: PyTorch is not installed; `pip install torch==2.13.0` first.")
        return 2
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(FLAGS.batch_size, 224, 224, 3)).astype("float32")
    labels = rng.integers(0, 1000, size=(FLAGS.batch_size,)).astype("int32")
    steps = {}
    for precision in FLAGS.precision:
        steps[("tensorflow", precision)] = tf_step_fn(keras, tf, FLAGS.variant, precision, images, labels)
        steps[("pytorch", precision)] = torch_step_fn(torch, FLAGS.variant, precision, images, labels)
    for step in steps.values():  # trace, allocate, warm up
        step()
        step()
    rates = {key: [] for key in steps}
    for _ in range(FLAGS.repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                step()
            rates[key].append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
    rows = [
        {"framework": f, "precision": p, "images_per_sec": statistics.median(r), "min": min(r), "max": max(r)}
        for (f, p), r in rates.items()
    ]
    median = {key: statistics.median(r) for key, r in rates.items()}
    ratios = {p: median[("tensorflow", p)] / median[("pytorch", p)] for p in FLAGS.precision}
    best_torch = max(FLAGS.precision, key=lambda p: median[("pytorch", p)])
    best_tf = max(FLAGS.precision, key=lambda p: median[("tensorflow", p)])
    import alexnet_tf

    report = {
        "variant": FLAGS.variant,
        "batch_size": FLAGS.batch_size,
        "rows": rows,
        "tensorflow_over_pytorch": ratios,
        "best_over_best": {
            "tensorflow": best_tf,
            "pytorch": best_torch,
            "ratio": median[("tensorflow", best_tf)] / median[("pytorch", best_torch)],
        },
        "alexnet_tf": os.path.dirname(os.path.abspath(alexnet_tf.__file__)),
        "torch": torch.__version__,
        "tensorflow": tf.__version__,
        "torch_threads": torch.get_num_threads(),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: TensorFlow's default)"),
    }
    if FLAGS.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"AlexNet {FLAGS.variant} training, batch {FLAGS.batch_size}, TensorFlow {tf.__version__} "
        f"vs PyTorch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"median of {FLAGS.repeats} x {FLAGS.steps} steps, timed alternately; "
        f"TF_ENABLE_ONEDNN_OPTS={report['tf_enable_onednn_opts']}"
    )
    print("| framework | precision | images/sec | min-max |")
    print("|---|---|---:|---|")
    for r in rows:
        print(
            f"| {r['framework']} | {r['precision']} | {r['images_per_sec']:.1f} "
            f"| {r['min']:.1f}-{r['max']:.1f} |"
        )
    for p, ratio in ratios.items():
        print(f"TensorFlow / PyTorch, {p}: {ratio:.2f}x")
    best = report["best_over_best"]
    print(f"TensorFlow {best['tensorflow']} / PyTorch's best ({best['pytorch']}): {best['ratio']:.2f}x")
    print(f"alexnet_tf measured: {report['alexnet_tf']}")
    return 0


if __name__ == "__main__":
    app.run(main)
