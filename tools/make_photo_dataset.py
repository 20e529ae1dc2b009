r"""Builds a small classification set of real photographs that ship inside pip packages.

    pip install scikit-image scikit-learn     # optional, never dependencies of alexnet_tf
    python tools/make_photo_dataset.py --output_dir=/tmp/photos [--classes=8] \
        [--train_per_class=50] [--validation_per_class=20] [--seed=0]

Nothing is downloaded: the photographs are files inside the installed wheels, scikit-learn's
`sklearn/datasets/images/` (china.jpg, flower.jpg: what `load_sample_images()` reads) and
scikit-image's `skimage/data/` (only files present in the wheel are used; nothing that
scikit-image would fetch through pooch). Colour photographs only: the grey, binary and
synthetic pictures in skimage/data are left out.

One class per photograph, named after it. The photograph is split across its longer side:
training crops come from the first `--train_fraction` (left or top 65%), validation crops from
the rest, which training never sees. Each crop is a square of random size (35-70% of its
region's shorter side) and position, resized to 256 x 256 and written as a JPEG (quality 90):
the package's evaluation crop (the central 224 of the 256 square) and torchvision's
Resize(256) + CenterCrop(224) see the same pixels, and the converter keeps the bytes as they are.

Layout, the converter's class-per-folder input:

    DIR/train/<class>/<class>_<n>.jpg
    DIR/validation/<class>/<class>_<n>.jpg

    python -m alexnet_tf.convert --train_dir=DIR/train --validation_dir=DIR/validation --output_dir=...

The same --seed writes the same files. Exit status 2, with one line, when scikit-image or
scikit-learn is missing or a photograph is too small for the crops asked for.
"""

import os
import sys

from absl import app, flags

flags.DEFINE_string("output_dir", None, "Folder for train/ and validation/ (new or empty).")
flags.DEFINE_integer("classes", 8, "Classes, one photograph each (at most the number of photographs).")
flags.DEFINE_integer("train_per_class", 50, "Training crops per class.")
flags.DEFINE_integer("validation_per_class", 20, "Validation crops per class.")
flags.DEFINE_integer("seed", 0, "Seed of the crops.")
flags.DEFINE_float("train_fraction", 0.65, "Share of each photograph's longer side that training crops use.")
flags.DEFINE_float("crop_min", 0.35, "Smallest crop side, as a share of its region's shorter side.")
flags.DEFINE_float("crop_max", 0.70, "Largest crop side, as a share of its region's shorter side.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS

SIZE = 256
QUALITY = 90
MIN_CROP = 48  # pixels: a smaller crop scaled up to 256 is mostly blur
# (package, file inside its data folder), in the order classes are taken.
PHOTOGRAPHS = (
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
    ("skimage", "astronaut.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "retina.jpg"),
    ("skimage", "ihc.png"),
)


def fail(message):
    print(f"tools/make_photo_dataset.py: {message}", file=sys.stderr)
    return 2


def photograph_paths():
    """{class name: path} of the photographs found inside the installed packages, in PHOTOGRAPHS order."""
    folders = {}
    try:
        import sklearn.datasets

        folders["sklearn"] = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    except ImportError:
        pass
    try:
        import skimage

        folders["skimage"] = os.path.join(os.path.dirname(skimage.__file__), "data")
    except ImportError:
        pass
    found = {}
    for package, name in PHOTOGRAPHS:
        path = os.path.join(folders.get(package, ""), name)
        if package in folders and os.path.isfile(path):
            found[os.path.splitext(name)[0]] = path
    return folders, found


def regions(width, height, train_fraction):
    """(train box, validation box) as (left, top, right, bottom), split across the longer side."""
    if width >= height:
        cut = round(width * train_fraction)
        return (0, 0, cut, height), (cut, 0, width, height)
    cut = round(height * train_fraction)
    return (0, 0, width, cut), (0, cut, width, height)


def random_crops(image, box, count, rng, crop_min, crop_max):
    """`count` square crops of random size and position inside box, each resized to SIZE x SIZE."""
    from PIL import Image

    left, top, right, bottom = box
    shorter = min(right - left, bottom - top)
    crops = []
    for _ in range(count):
        side = max(1, round(shorter * rng.uniform(crop_min, crop_max)))
        x = left + int(rng.integers(0, right - left - side + 1))
        y = top + int(rng.integers(0, bottom - top - side + 1))
        crop = image.crop((x, y, x + side, y + side))
        crops.append(crop.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return crops


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import numpy as np
    from PIL import Image

    folders, found = photograph_paths()
    missing = [p for p in ("sklearn", "skimage") if p not in folders]
    if missing:
        names = {"sklearn": "scikit-learn", "skimage": "scikit-image"}
        return fail(
            f"{' and '.join(names[m] for m in missing)} not installed; "
            f"`pip install {' '.join(names[m] for m in missing)}` (the photographs ship inside them)"
        )
    if not 0 < FLAGS.crop_min <= FLAGS.crop_max <= 1 or not 0 < FLAGS.train_fraction < 1:
        return fail("need 0 < --crop_min <= --crop_max <= 1 and 0 < --train_fraction < 1")
    if FLAGS.train_per_class < 1 or FLAGS.validation_per_class < 1:
        return fail("--train_per_class and --validation_per_class must be >= 1")
    if not 1 <= FLAGS.classes <= len(found):
        return fail(
            f"--classes={FLAGS.classes}: the installed packages hold {len(found)} colour photographs "
            f"({', '.join(found)}); choose 1..{len(found)}"
        )
    output_dir = FLAGS.output_dir
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        return fail(f"{output_dir} is not empty; give a new or empty --output_dir")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        return fail(f"--output_dir={output_dir} is a file; give a new or empty folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        return fail(f"cannot write to --output_dir={output_dir} ({e.strerror}); choose a writable folder")
    chosen = list(found.items())[: FLAGS.classes]
    plans = []
    for name, path in chosen:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        train_box, validation_box = regions(image.width, image.height, FLAGS.train_fraction)
        for split, box in (("train", train_box), ("validation", validation_box)):
            shorter = min(box[2] - box[0], box[3] - box[1])
            if shorter * FLAGS.crop_min < MIN_CROP:
                return fail(
                    f"{path} ({image.width}x{image.height}) is too small: its {split} region's smallest "
                    f"crops would be {shorter * FLAGS.crop_min:.0f} px (< {MIN_CROP}); raise --crop_min "
                    f"or move --train_fraction toward 0.5, or use fewer --classes"
                )
        plans.append((name, path, image, train_box, validation_box))
    rng = np.random.default_rng(FLAGS.seed)
    counts = {"train": FLAGS.train_per_class, "validation": FLAGS.validation_per_class}
    for name, path, image, train_box, validation_box in plans:
        for split, box in (("train", train_box), ("validation", validation_box)):
            folder = os.path.join(output_dir, split, name)
            os.makedirs(folder, exist_ok=True)
            crops = random_crops(image, box, counts[split], rng, FLAGS.crop_min, FLAGS.crop_max)
            for n, crop in enumerate(crops):
                crop.save(os.path.join(folder, f"{name}_{n}.jpg"), quality=QUALITY)
        print(
            f"{name}: {counts['train']} train crops from {train_box}, "
            f"{counts['validation']} validation crops from {validation_box} of {path}"
        )
    folders = " and ".join(os.path.join(output_dir, split) for split in counts)
    print(
        f"wrote {len(plans)} classes x ({counts['train']} train + {counts['validation']} validation) "
        f"{SIZE}x{SIZE} JPEGs to {folders}"
    )
    return 0


if __name__ == "__main__":
    app.run(main)
