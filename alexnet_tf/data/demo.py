"""Demo data: a small, learnable shapes-and-patterns dataset, rendered and run through the converter.

    python tools/make_demo_dataset.py --output_dir=/tmp/alexnet_demo   # ~20 s on 2 CPU cores

Ten classes that stay recognisable in a 224-px crop of an image whose shorter side is
resized to 256: five shapes (circle, square, triangle, ring, cross) and five textures
(horizontal, vertical and diagonal stripes, checkerboard, dots). Size, position, rotation,
colours, background gradient and noise vary per image. Horizontal flips, the paper's
augmentation, keep every class what it is. Everything is a pure function of the seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from alexnet_tf.data import convert

CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
)
# Bump when the rendering changes, so caches of the old images are not reused.
_RENDER_VERSION = 1
_DONE = "RENDERED"


class DemoTree(NamedTuple):
    """Paths of a rendered demo tree, ready for `convert.convert`."""

    train_dir: str  # train/<synset>/<synset>_<n>.JPEG
    validation_dir: str  # flat val/ILSVRC2012_val_<n>.JPEG, as ILSVRC-2012 ships it
    validation_labels: str  # one synset per line in sorted file-name order
    class_names: str  # "synset name" lines, like the devkit's LOC_synset_mapping.txt


def demo_synset(index: int) -> str:
    """Returns the made-up WordNet-style id of demo class `index` (no real synset is this low)."""
    return f"n{index:08d}"


def _colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground colours far enough apart to see the shape."""
    while True:
        background, foreground = rng.uniform(0, 255, size=(2, 3))
        if np.abs(background - foreground).sum() > 180:
            return background, foreground


def _mask(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A [height, width] float mask in [0, 1] of the class's shape or texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(height, width)
    if kind in CLASS_NAMES[:5]:  # one shape, 45-75% of the shorter side, off-centre a little
        cy = height * rng.uniform(0.4, 0.6)
        cx = width * rng.uniform(0.4, 0.6)
        size = short * rng.uniform(0.22, 0.37)
        angle = np.deg2rad(rng.uniform(-20, 20))
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        radius = np.hypot(u, v)
        if kind == "circle":
            return radius < size
        if kind == "ring":
            return (radius < size) & (radius > size * rng.uniform(0.5, 0.7))
        if kind == "square":
            return (np.abs(u) < size * 0.85) & (np.abs(v) < size * 0.85)
        if kind == "cross":
            bar = size * rng.uniform(0.22, 0.35)
            return ((np.abs(u) < bar) & (np.abs(v) < size)) | ((np.abs(v) < bar) & (np.abs(u) < size))
        # Triangle pointing up: inside all three edges of an equilateral triangle.
        corners = [(size * np.cos(a), size * np.sin(a)) for a in np.deg2rad([-90, 30, 150])]
        inside = np.ones_like(u, dtype=bool)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) > 0
        return inside
    period = rng.uniform(0.12, 0.22) * short  # 4-8 periods across the image
    angle = {
        "horizontal_stripes": 90,
        "vertical_stripes": 0,
        "checkerboard": 0,
        "dots": 0,
        "diagonal_stripes": rng.choice([45, 135]),
    }[kind] + rng.uniform(-8, 8)
    angle = np.deg2rad(angle)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform(0, 1)
    v = (-x * np.sin(angle) + y * np.cos(angle)) / period + rng.uniform(0, 1)
    if kind.endswith("stripes"):
        return (u % 1) < 0.5
    if kind == "checkerboard":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    return np.hypot(u % 1 - 0.5, v % 1 - 0.5) < rng.uniform(0.2, 0.32)  # dots


def render_image(
    class_index: int, rng: np.random.Generator, min_size: int = 96, max_size: int = 160
) -> np.ndarray:
    """Renders one demo image of class `class_index`.

    Args:
      class_index: index into CLASS_NAMES.
      rng: the source of every random choice.
      min_size: smallest height/width in pixels.
      max_size: largest height/width in pixels.
    Returns:
      uint8 [height, width, 3] array.
    """
    height, width = rng.integers(min_size, max_size + 1, size=2)
    background, foreground = _colors(rng)
    mask = _mask(CLASS_NAMES[class_index], rng, height, width)[..., None].astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = ((x * np.cos(direction) + y * np.sin(direction)) / max(height, width))[..., None]
    image = background + rng.uniform(-40, 40, size=3) * gradient
    image = image * (1 - mask) + foreground * mask
    image += rng.normal(0, rng.uniform(0, 12), size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_demo_tree(
    root: str,
    seed: int = 0,
    num_classes: int = 10,
    train_per_class: int = 100,
    validation_per_class: int = 20,
    min_size: int = 96,
    max_size: int = 160,
) -> DemoTree:
    """Renders the demo dataset as JPEGs in the ILSVRC-2012 folder layout.

    Args:
      root: folder to write into (created; existing files of the same names are replaced).
      seed: every pixel is a function of (seed, split, class, image number).
      num_classes: how many of CLASS_NAMES to use (1..10).
      train_per_class: training images per class.
      validation_per_class: held-out validation images per class.
      min_size: smallest image height/width in pixels.
      max_size: largest image height/width in pixels.
    Returns:
      A DemoTree with the paths to pass to `convert.convert`.
    """
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_NAMES)}, got {num_classes}")
    tree = DemoTree(
        *(os.path.join(root, name) for name in ("train", "val", "validation_labels.txt", "synset_names.txt"))
    )

    def write_jpeg(path: str, split: int, class_index: int, number: int) -> None:
        rng = np.random.default_rng([seed, split, class_index, number])
        with tf.device("/CPU:0"):
            data = tf.io.encode_jpeg(render_image(class_index, rng, min_size, max_size), quality=95).numpy()
        with open(path, "wb") as f:
            f.write(data)

    for c in range(num_classes):
        folder = os.path.join(tree.train_dir, demo_synset(c))
        os.makedirs(folder, exist_ok=True)
        for n in range(train_per_class):
            write_jpeg(os.path.join(folder, f"{demo_synset(c)}_{n}.JPEG"), 0, c, n)
    # Validation: flat files in a seeded class order, labelled by a ground-truth list.
    order = [(c, n) for c in range(num_classes) for n in range(validation_per_class)]
    np.random.default_rng([seed, 1]).shuffle(order)
    os.makedirs(tree.validation_dir, exist_ok=True)
    for k, (c, n) in enumerate(order, 1):
        write_jpeg(os.path.join(tree.validation_dir, f"ILSVRC2012_val_{k:08d}.JPEG"), 1, c, n)
    with open(tree.validation_labels, "w", encoding="utf-8") as f:
        f.writelines(f"{demo_synset(c)}\n" for c, _ in order)
    with open(tree.class_names, "w", encoding="utf-8") as f:
        f.writelines(f"{demo_synset(c)} {CLASS_NAMES[c]}\n" for c in range(num_classes))
    return tree


@contextlib.contextmanager
def _locked(path: str):
    """Holds an exclusive lock on `path`, so that concurrent trainers build the data once."""
    try:
        import fcntl  # POSIX only
    except ImportError:
        yield
        return
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_demo_dataset(
    cache_dir: str,
    seed: int = 0,
    num_classes: int = 10,
    train_per_class: int = 100,
    validation_per_class: int = 20,
    num_workers: int | None = 1,
    progress: bool = False,
) -> str:
    """Renders and converts the demo dataset once per settings; later calls reuse it.

    Args:
      cache_dir: parent folder of the cached datasets (created if missing).
      seed: rendering seed; with the other settings it names the cache entry.
      num_classes: number of classes (1..10).
      train_per_class: training images per class.
      validation_per_class: validation images per class.
      num_workers: converter worker processes; the default 1 converts in this process, which
        beats starting TensorFlow in new processes at this size.
      progress: print the converter's progress line.
    Returns:
      The folder with the TFRecord shards, labels.txt and manifest.json.
    """
    settings = dict(
        version=_RENDER_VERSION,
        seed=seed,
        num_classes=num_classes,
        train_per_class=train_per_class,
        validation_per_class=validation_per_class,
    )
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    base = os.path.join(cache_dir, f"demo-{num_classes}c-seed{seed}-{key}")
    output_dir = os.path.join(base, "tfrecords")
    os.makedirs(cache_dir, exist_ok=True)
    with _locked(base + ".lock"):
        try:
            if convert.load_manifest(output_dir).get("complete"):
                return output_dir
        except convert.ConversionError:
            pass
        raw = os.path.join(base, "raw")
        if not os.path.exists(os.path.join(raw, _DONE)):
            shutil.rmtree(raw, ignore_errors=True)
            render_demo_tree(raw, seed, num_classes, train_per_class, validation_per_class)
            open(os.path.join(raw, _DONE), "w", encoding="utf-8").close()
        tree = DemoTree(
            *(
                os.path.join(raw, name)
                for name in ("train", "val", "validation_labels.txt", "synset_names.txt")
            )
        )
        convert.convert(
            output_dir,
            train_dir=tree.train_dir,
            validation_dir=tree.validation_dir,
            validation_labels=tree.validation_labels,
            class_names=tree.class_names,
            train_shards=4,
            validation_shards=2,
            num_workers=num_workers,
            progress=progress,
        )
    return output_dir
