r"""Trains the same AlexNet on the same images with PyTorch and with alexnet_tf; compares the curves.

    pip install torch==2.13.0     # optional, never a dependency of alexnet_tf
    python tools/make_photo_dataset.py --output_dir=/tmp/photos
    python tools/compare_learning.py --images=/tmp/photos --output_dir=/tmp/compare \
        [--variant=one_weird_trick] [--recipe=torchvision] [--epochs=15] [--batch_size=32] \
        [--seeds=0,1,2] [--frameworks=tensorflow,pytorch]

--images is a class-per-folder tree, IMAGES/train/<class>/* and IMAGES/validation/<class>/*,
the converter's input, so both frameworks read the same files. For each seed, in turn:

- TensorFlow: `python -m alexnet_tf.train` in a fresh process on the TFRecords that
  `python -m alexnet_tf.convert` makes of IMAGES once (OUTPUT/tfrecords, reused when there),
  model dir OUTPUT/tf/seed<N> (emptied first, so every run starts afresh), `--noexport`. Its
  per-epoch validation top-1 is read from the run's TensorBoard events (validation/, tag top1).
- PyTorch, in this process: the same layout (`torch_alexnet` of tools/compare_pytorch.py;
  one_weird_trick is torchvision's AlexNet) with PyTorch's default initialisation, trained
  with torchvision's reference recipe as written out below, augmentation in PIL/torch (no
  torchvision needed), evaluated on the whole validation split after every epoch.

Settings of a short comparison, applied to BOTH frameworks (each flag overrides one):
torchvision's recipe quotes 0.01 for 256 images (32 per GPU x 8 GPUs), scaled linearly with
the batch, with StepLR every 30 of 90 epochs; for a run of 15 epochs on a few hundred images the
comparison instead uses 0.01 at batch 32 (--learning_rate is the rate at the run's batch; its
default is 0.01 * batch / 32; the trainer, which quotes its rate at batch 128, gets
`--learning_rate=lr * 128 / batch`, 0.04), a cosine schedule over the whole run without warm-up
(the trainer's `--lr_schedule=cosine`: base * (1 + cos(pi * step / total)) / 2, which is
PyTorch's CosineAnnealingLR with T_max = total steps stepped once per batch), and weight decay
1e-4. Batches drop the remainder, as the trainer does: steps per epoch = training images // batch.
Two known differences: PyTorch's SGD decays every parameter (torchvision's default), the
trainer decays kernels only; and the two decode the same JPEG bytes with different libraries.

--recipe=paper runs the TensorFlow side only (`--frameworks=tensorflow`): the paper's recipe
(mean-subtracted 0-255 input, N(0, 0.01) init with the paper's biases, its crops) is not
written out for PyTorch here. With --recipe=paper only the flags you give are passed on.

Prints, per epoch, mean +- standard deviation over the seeds (sample std; 0 for one seed) of
validation top-1 in percent for each framework, then one final-epoch line per framework.
Writes OUTPUT/compare_learning.json (every seed's curve, the settings, the machine, versions)
and OUTPUT/compare_learning.png (the curves, mean with a +-std band, drawn with Pillow).
Progress goes to stderr. Exit status 2: bad flags or inputs, or a missing optional package;
1: a training run failed or wrote fewer epochs than asked.
"""

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

# torchvision's reference recipe for AlexNet (references/classification/train.py, README:
# `torchrun --nproc_per_node=8 train.py --model alexnet --lr 1e-2`), written out.
TORCHVISION_LR = 0.01  # for the global batch below; scaled linearly with the batch
TORCHVISION_BATCH = 256  # 32 images per GPU x 8 GPUs
TORCHVISION_MOMENTUM = 0.9
TORCHVISION_WEIGHT_DECAY = 1e-4  # on every parameter (no --norm-weight-decay)
TORCHVISION_LR_STEP_EPOCHS = 30  # StepLR(step_size=30, gamma=0.1)
TORCHVISION_LR_GAMMA = 0.1
TORCHVISION_EPOCHS = 90
TORCHVISION_CROP = 224  # RandomResizedCrop(224, scale=(0.08, 1.0), ratio=(3/4, 4/3)) + RandomHorizontalFlip
TORCHVISION_CROP_SCALE = (0.08, 1.0)
TORCHVISION_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
TORCHVISION_EVAL_RESIZE = 256  # Resize(256) + CenterCrop(224)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # ToTensor() then Normalize(mean, std)
TORCHVISION_STD = (0.229, 0.224, 0.225)
TORCHVISION_DROPOUT = 0.5
# The comparison's defaults for short runs (both frameworks).
SHORT_RUN_LR = 0.01  # at SHORT_RUN_BATCH, scaled linearly with the batch
SHORT_RUN_BATCH = 32
SHORT_RUN_SCHEDULE = "cosine"
SHORT_RUN_WEIGHT_DECAY = 1e-4
TRAINER_REFERENCE_BATCH = 128  # the trainer's --learning_rate is quoted at this batch

FRAMEWORKS = ("tensorflow", "pytorch")
PNG_SIZE = (960, 600)
COLOURS = {"tensorflow": (230, 120, 20), "pytorch": (40, 90, 200)}


def parse_flags(argv):
    """The command line (argparse: importing tools/compare_pytorch.py defines absl flags of its own)."""
    parser = argparse.ArgumentParser(
        prog="tools/compare_learning.py",
        description=__doc__.split("\n", 1)[0],
        epilog="See the docstring of tools/compare_learning.py for the recipes.",
    )
    add = parser.add_argument
    add("--images", required=True, help="Class-per-folder tree with train/ and validation/ sub-folders.")
    add("--output_dir", required=True, help="Where the TFRecords, the runs, the JSON and the PNG go.")
    add("--variant", default="one_weird_trick", choices=["one_weird_trick", "paper"], help="AlexNet variant.")
    add("--recipe", default="torchvision", choices=["torchvision", "paper"], help="Recipe (paper: TF only).")
    add("--epochs", type=int, default=15, help="Epochs of every run.")
    add("--batch_size", type=int, default=32, help="Batch of every run.")
    add("--seeds", default="0,1,2", help="Comma-separated seeds; one run per framework and seed.")
    add("--frameworks", default=",".join(FRAMEWORKS), help="tensorflow, pytorch or both, comma-separated.")
    add(
        "--learning_rate",
        type=float,
        help="Learning rate at --batch_size (default with torchvision: 0.01 * batch / 32).",
    )
    add("--lr_schedule", choices=["cosine", "step"], help="Default with torchvision: cosine.")
    add("--weight_decay", type=float, help="Default with torchvision: 1e-4.")
    add("--extra_train_flags", default="", help="More flags for python -m alexnet_tf.train, space-separated.")
    return parser.parse_args(argv)


class Failure(Exception):
    """A one-line message and an exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def log(message, start):
    print(f"[{time.monotonic() - start:7.1f} s] {message}", file=sys.stderr, flush=True)


def settings_from_flags(args):
    """The run's settings; raises Failure(status 2) on a bad combination."""
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if not frameworks or unknown or len(set(frameworks)) != len(frameworks):
        raise Failure(f"--frameworks must name tensorflow and/or pytorch, got {','.join(frameworks)}", 2)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as error:
        raise Failure(f"--seeds must be integers: {error}", 2) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise Failure("--seeds must list distinct integers", 2)
    if args.epochs < 1 or args.batch_size < 1:
        raise Failure("--epochs and --batch_size must be >= 1", 2)
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise Failure(f"--learning_rate must be > 0, got {args.learning_rate}", 2)
    if args.weight_decay is not None and not args.weight_decay >= 0:
        raise Failure(f"--weight_decay must be >= 0, got {args.weight_decay}", 2)
    if args.recipe == "paper" and "pytorch" in frameworks:
        raise Failure(
            "--recipe=paper is written out for TensorFlow only; add --frameworks=tensorflow "
            "(PyTorch runs torchvision's recipe: --recipe=torchvision)",
            2,
        )
    torchvision = args.recipe == "torchvision"
    learning_rate = args.learning_rate
    if learning_rate is None and torchvision:
        learning_rate = SHORT_RUN_LR * args.batch_size / SHORT_RUN_BATCH
    schedule = args.lr_schedule or (SHORT_RUN_SCHEDULE if torchvision else None)
    weight_decay = args.weight_decay
    if weight_decay is None and torchvision:
        weight_decay = SHORT_RUN_WEIGHT_DECAY
    images = os.path.abspath(args.images)
    for split in ("train", "validation"):
        folder = os.path.join(images, split)
        if not os.path.isdir(folder):
            raise Failure(f"{folder} is not a folder: --images needs train/ and validation/ class folders", 2)
    return {
        "images": images,
        "output_dir": os.path.abspath(args.output_dir),
        "variant": args.variant,
        "recipe": args.recipe,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seeds": seeds,
        "frameworks": frameworks,
        "learning_rate": learning_rate,
        "lr_schedule": schedule,
        "weight_decay": weight_decay,
        "momentum": TORCHVISION_MOMENTUM,
        "warmup_epochs": 0.0 if torchvision else None,
        "extra_train_flags": args.extra_train_flags.split(),
    }


# ---------------------------------------------------------------------------------------------
# TensorFlow: python -m alexnet_tf.convert once, python -m alexnet_tf.train per seed.


def run_logged(command, prefix, start, keep=30):
    """Runs command, forwarding its epoch lines to stderr; returns (status, its last lines)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    tail = []
    for line in process.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-keep:]
        if " epoch " in line or line.startswith(("Trained", "converting")):
            log(f"{prefix} {line[-200:]}", start)
    return process.wait(), tail


def convert_once(settings, start):
    """Runs the converter every time: on the same tree it checks the shards and rewrites nothing
    (seconds); a folder converted from another tree, or a tree that changed, it refuses (status 2)."""
    records = os.path.join(settings["output_dir"], "tfrecords")
    command = [
        sys.executable,
        "-m",
        "alexnet_tf.convert",
        f"--train_dir={os.path.join(settings['images'], 'train')}",
        f"--validation_dir={os.path.join(settings['images'], 'validation')}",
        f"--output_dir={records}",
    ]
    log(f"tensorflow: converting {settings['images']} to {records}", start)
    status, tail = run_logged(command, "[convert]", start)
    if status != 0:  # 2: bad input (e.g. another tree's shards in OUTPUT/tfrecords), 1: files skipped
        raise Failure(
            f"{' '.join(command[1:])} failed (status {status}): {' | '.join(useful_lines(tail)[-3:])}",
            2 if status == 2 else 1,
        )
    return records


def train_command(settings, records, model_dir, seed):
    command = [
        sys.executable,
        "-m",
        "alexnet_tf.train",
        f"--data_dir={records}",
        f"--model_dir={model_dir}",
        f"--variant={settings['variant']}",
        f"--recipe={settings['recipe']}",
        f"--epochs={settings['epochs']}",
        f"--batch_size={settings['batch_size']}",
        f"--seed={seed}",
        "--noexport",
    ]
    if settings["learning_rate"] is not None:
        at_128 = settings["learning_rate"] * TRAINER_REFERENCE_BATCH / settings["batch_size"]
        command.append(f"--learning_rate={at_128:.10g}")
    if settings["lr_schedule"] is not None:
        command.append(f"--lr_schedule={settings['lr_schedule']}")
        if settings["lr_schedule"] == "step":
            boundaries = range(TORCHVISION_LR_STEP_EPOCHS, settings["epochs"], TORCHVISION_LR_STEP_EPOCHS)
            command.append(f"--lr_decay_epochs={','.join(str(b) for b in boundaries) or '1000000'}")
            command.append(f"--lr_decay_factor={TORCHVISION_LR_GAMMA}")
    if settings["weight_decay"] is not None:
        command.append(f"--weight_decay={settings['weight_decay']:.10g}")
    if settings["warmup_epochs"] is not None:
        command.append(f"--warmup_epochs={settings['warmup_epochs']:g}")
    return command + settings["extra_train_flags"]


def useful_lines(lines):
    """The lines of a command's output that say what went wrong: no absl INFO/WARNING log lines."""
    noise = re.compile(r"^([IW]\d{4} |WARNING: All log messages before absl)")
    return [line for line in lines if line.strip() and not noise.match(line)]


def read_records(path):
    """The serialized records of one TFRecord file (TensorBoard's event files are TFRecords)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length:
                return  # a record still being written
            f.read(4)
            yield data


def scalar(value):
    """The number of a scalar summary value: a float32/float64 tensor (tf.summary) or simple_value."""
    if not value.HasField("tensor"):
        return float(value.simple_value)
    tensor = value.tensor
    if tensor.float_val:
        return float(tensor.float_val[0])
    if tensor.double_val:
        return float(tensor.double_val[0])
    code = {1: "<f", 2: "<d"}[tensor.dtype]  # DT_FLOAT, DT_DOUBLE
    return float(struct.unpack(code, tensor.tensor_content[: struct.calcsize(code)])[0])


def validation_top1(model_dir):
    """[(step, top1)] from the run's validation event files, the last value per step, by step."""
    from tensorboard.compat.proto import event_pb2

    folder = os.path.join(model_dir, "validation")
    values = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.startswith("events"):
            continue
        for record in read_records(os.path.join(folder, name)):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.tag == "top1":
                    values[event.step] = scalar(value)
    return sorted(values.items())


def tensorflow_run(settings, records, seed, start):
    model_dir = os.path.join(settings["output_dir"], "tf", f"seed{seed}")
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)  # a fresh run, not a resumed one
    command = train_command(settings, records, model_dir, seed)
    log(f"[tensorflow seed {seed}] {' '.join(command[1:])}", start)
    began = time.monotonic()
    status, tail = run_logged(command, f"[tensorflow seed {seed}]", start)
    last = " | ".join(useful_lines(tail)[-3:])
    if status != 0:
        raise Failure(f"tensorflow seed {seed} failed (status {status}), model dir {model_dir}: {last}", 1)
    curve = [top1 for _, top1 in validation_top1(model_dir)]
    if len(curve) < settings["epochs"]:
        raise Failure(
            f"tensorflow seed {seed} wrote {len(curve)} validation top1 values, not {settings['epochs']}, "
            f"in {os.path.join(model_dir, 'validation')}: {last}",
            1,
        )
    return {"top1": curve[-settings["epochs"] :], "seconds": time.monotonic() - began, "command": command}


# ---------------------------------------------------------------------------------------------
# PyTorch, in this process: torchvision's recipe with its augmentation written in PIL + numpy.


def class_files(images, split):
    folder = os.path.join(images, split)
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(folder, name))):
            if not file.startswith("."):
                files.append((os.path.join(folder, name, file), label))
    return classes, files


def load_rgb(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise Failure(
            f"{path}: not an image PyTorch's side can read ({e}); remove it from --images", 2
        ) from None


def random_resized_crop_box(width, height, rng, scale=TORCHVISION_CROP_SCALE, ratio=TORCHVISION_CROP_RATIO):
    """torchvision's RandomResizedCrop.get_params: 10 tries, then the central crop. (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_pixels(image, rng):
    """RandomResizedCrop(224) (bilinear, antialiased: PIL's resize) + horizontal flip, uint8 HWC."""
    import numpy as np
    from PIL import Image

    left, top, w, h = random_resized_crop_box(image.width, image.height, rng)
    crop = image.resize(
        (TORCHVISION_CROP, TORCHVISION_CROP), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
    )
    pixels = np.asarray(crop)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return pixels


def eval_pixels(image):
    """Resize(256) (shorter side, bilinear, antialiased) + CenterCrop(224), uint8 HWC."""
    import numpy as np
    from PIL import Image

    short = min(image.width, image.height)
    if short != TORCHVISION_EVAL_RESIZE:
        if image.width <= image.height:
            size = (TORCHVISION_EVAL_RESIZE, int(TORCHVISION_EVAL_RESIZE * image.height / image.width))
        else:
            size = (int(TORCHVISION_EVAL_RESIZE * image.width / image.height), TORCHVISION_EVAL_RESIZE)
        image = image.resize(size, Image.Resampling.BILINEAR)
    top = int(round((image.height - TORCHVISION_CROP) / 2.0))
    left = int(round((image.width - TORCHVISION_CROP) / 2.0))
    return np.asarray(image.crop((left, top, left + TORCHVISION_CROP, top + TORCHVISION_CROP)))


def to_tensor(torch, batch):
    """uint8 NHWC -> ToTensor() + Normalize(mean, std), float32 NCHW."""
    import numpy as np

    x = torch.from_numpy(np.ascontiguousarray(np.stack(batch))).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pytorch_run(torch, settings, data, seed, start):
    from compare_pytorch import torch_alexnet
    import numpy as np

    train_images, train_labels, val_x, val_y, num_classes = data
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)  # data order and augmentation
    model = torch_alexnet(torch, settings["variant"], num_classes)  # PyTorch's default initialisation
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings["learning_rate"],
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
    )
    batch = settings["batch_size"]
    steps_per_epoch = len(train_images) // batch
    if steps_per_epoch < 1:
        raise Failure(f"{len(train_images)} training images make no batch of {batch}; lower --batch_size", 2)
    total = steps_per_epoch * settings["epochs"]
    if settings["lr_schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=TORCHVISION_LR_STEP_EPOCHS * steps_per_epoch, gamma=TORCHVISION_LR_GAMMA
        )
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.tensor(train_labels, dtype=torch.int64)
    curve, losses, began = [], [], time.monotonic()
    for epoch in range(settings["epochs"]):
        model.train()
        order = rng.permutation(len(train_images))
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch : (step + 1) * batch]
            x = to_tensor(torch, [train_pixels(train_images[i], rng) for i in index])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), labels[torch.from_numpy(index)])
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += float(loss.detach())
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(val_y), batch):
                predicted = model(val_x[i : i + batch]).argmax(dim=1)
                correct += int((predicted == val_y[i : i + batch]).sum())
        curve.append(correct / len(val_y))
        losses.append(epoch_loss / steps_per_epoch)
        log(
            f"[pytorch seed {seed}] epoch {epoch + 1}/{settings['epochs']}: train loss {losses[-1]:.4f}, "
            f"validation top-1 {curve[-1]:.4f}",
            start,
        )
    return {"top1": curve, "train_loss": losses, "seconds": time.monotonic() - began}


def pytorch_data(torch, settings):
    classes, train = class_files(settings["images"], "train")
    val_classes, validation = class_files(settings["images"], "validation")
    if classes != val_classes:
        raise Failure(f"train/ and validation/ of {settings['images']} hold different class folders", 2)
    if not train or not validation:
        raise Failure(f"{settings['images']}: no images in train/ or validation/", 2)
    train_images = [load_rgb(path) for path, _ in train]
    val_x = to_tensor(torch, [eval_pixels(load_rgb(path)) for path, _ in validation])
    val_y = torch.tensor([label for _, label in validation], dtype=torch.int64)
    return train_images, [label for _, label in train], val_x, val_y, len(classes)


# ---------------------------------------------------------------------------------------------
# Report: table, JSON, PNG.


def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_cell(values):
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def machine():
    model = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "platform": platform.platform()}


def versions(torch):
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if torch is not None:
        found["torch"] = torch.__version__
    spec = importlib.util.find_spec("alexnet_tf")  # its path, without importing TensorFlow here
    found["alexnet_tf"] = os.path.dirname(os.path.abspath(spec.origin)) if spec else None
    return found


def draw_png(path, report):
    """The mean curve of each framework with a +-std band, axes, legend and title, with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = PNG_SIZE
    left, right, top, bottom = 80, width - 30, 60, height - 70
    image = Image.new("RGB", PNG_SIZE, "white")
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(image)
    settings = report["settings"]
    epochs = settings["epochs"]

    def x_of(epoch):
        return left + (right - left) * ((epoch - 1) / max(epochs - 1, 1))

    def y_of(top1):
        return bottom - (bottom - top) * top1

    for percent in range(0, 101, 10):  # grid and y ticks
        y = y_of(percent / 100)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{percent}", fill="black", font=font, anchor="rm")
    tick = max(1, math.ceil(epochs / 15))
    for epoch in range(1, epochs + 1, tick):
        draw.line([(x_of(epoch), bottom), (x_of(epoch), bottom + 5)], fill="black")
        draw.text((x_of(epoch), bottom + 8), str(epoch), fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 30), "epoch", fill="black", font=font, anchor="mt")
    draw.text((12, (top + bottom) / 2), "validation\ntop-1 (%)", fill="black", font=font, anchor="lm")
    title = (
        f"AlexNet {settings['variant']}, recipe {settings['recipe']}, batch {settings['batch_size']}, "
        f"seeds {','.join(str(s) for s in settings['seeds'])}: validation top-1, mean ± std"
    )
    draw.text((width / 2, 25), title, fill="black", font=font, anchor="mm")
    for framework, summary in report["summary"].items():  # bands first, under every line
        colour = COLOURS[framework]
        pairs = list(enumerate(zip(summary["mean"], summary["std"]), start=1))
        upper = [(x_of(e), y_of(min(1.0, m + s))) for e, (m, s) in pairs]
        lower = [(x_of(e), y_of(max(0.0, m - s))) for e, (m, s) in pairs]
        band = Image.new("RGBA", PNG_SIZE, (0, 0, 0, 0))
        ImageDraw.Draw(band).polygon(upper + lower[::-1], fill=(*colour, 60))
        image.paste(band, (0, 0), band)
    draw = ImageDraw.Draw(image)
    for row, (framework, summary) in enumerate(report["summary"].items()):
        colour = COLOURS[framework]
        points = [(x_of(e + 1), y_of(m)) for e, m in enumerate(summary["mean"])]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        y = top + 15 + 20 * row  # legend
        draw.line([(left + 15, y), (left + 45, y)], fill=colour, width=3)
        final_mean, final_std = summary["mean"][-1], summary["std"][-1]
        label = f"{framework}: final {100 * final_mean:.1f} ± {100 * final_std:.1f}%"
        draw.text((left + 52, y), label, fill="black", font=font, anchor="lm")
    image.save(path)


def main(argv=None):
    args = parse_flags(argv)
    try:
        return compare(args)
    except Failure as failure:
        print(f"tools/compare_learning.py: {failure}", file=sys.stderr)
        return failure.status


def compare(args):
    start = time.monotonic()
    settings = settings_from_flags(args)
    torch = None
    if "pytorch" in settings["frameworks"]:
        try:
            import torch
        except ImportError:
            raise Failure(
                "PyTorch is not installed; `pip install torch` (or --frameworks=tensorflow)", 2
            ) from None
        torch.set_num_threads(os.cpu_count())
    if settings["extra_train_flags"] and len(settings["frameworks"]) > 1:
        log(
            f"note: --extra_train_flags ({' '.join(settings['extra_train_flags'])}) change the "
            "TensorFlow runs only; the PyTorch side keeps its settings",
            start,
        )
    os.makedirs(settings["output_dir"], exist_ok=True)
    records = convert_once(settings, start) if "tensorflow" in settings["frameworks"] else None
    data = pytorch_data(torch, settings) if torch is not None else None
    runs = {framework: {} for framework in settings["frameworks"]}
    for seed in settings["seeds"]:
        if records is not None:
            runs["tensorflow"][str(seed)] = tensorflow_run(settings, records, seed, start)
        if data is not None:
            runs["pytorch"][str(seed)] = pytorch_run(torch, settings, data, seed, start)
    summary = {}
    for framework, by_seed in runs.items():
        per_epoch = list(zip(*(run["top1"] for run in by_seed.values())))
        stats = [mean_std(values) for values in per_epoch]
        summary[framework] = {"mean": [m for m, _ in stats], "std": [s for _, s in stats]}
    report = {
        "settings": settings,
        "runs": runs,
        "summary": summary,
        "machine": machine(),
        "versions": versions(torch),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    json_path = os.path.join(settings["output_dir"], "compare_learning.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    png_path = os.path.join(settings["output_dir"], "compare_learning.png")
    draw_png(png_path, report)

    frameworks = list(runs)
    seeds = ",".join(str(s) for s in settings["seeds"])
    print(
        f"AlexNet {settings['variant']}, recipe {settings['recipe']}, {settings['epochs']} epochs at batch "
        f"{settings['batch_size']}, seeds {seeds}: validation top-1 (%), mean ± std over seeds"
    )
    print("| epoch | " + " | ".join(frameworks) + " |")
    print("|---:|" + "---:|" * len(frameworks))
    for epoch in range(settings["epochs"]):
        cells = [format_cell([run["top1"][epoch] for run in runs[f].values()]) for f in frameworks]
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")
    for framework in frameworks:
        final = format_cell([run["top1"][-1] for run in runs[framework].values()])
        epoch = settings["epochs"]
        print(f"final {framework}: {final}% validation top-1 at epoch {epoch} over seeds {seeds}")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
