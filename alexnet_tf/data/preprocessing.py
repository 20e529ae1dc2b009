"""Pixels only: decoding, the paper's crops, ten crops, PCA lighting and the ImageNet constants.

One set of functions shared by training (`alexnet_tf.data.pipelines`), evaluation and serving
(`alexnet_tf.serving.signatures`), so they cannot drift apart. Images come in as decoded uint8 (or float in
[0, 255]) and leave as float32 NHWC in the [0, 255] scale with the ImageNet mean subtracted.

Following the paper (docs/paper.md, "Data"), an image is first reduced to the central square of
its shorter side, rescaled to 256 x 256 when it is not already that size (the converter writes
images whose shorter side is 256, so rescaling is normally skipped), and then cropped:
- train ("paper"): a random 224 crop of that square, horizontal flip, PCA lighting noise;
- eval: the central 224 crop, or ten crops (four corners, centre, and their mirror images).
The cheap per-pixel work (flip, cast, lighting, mean) runs on whole batches: on the host
(`augment_batch`), or in the train step on the accelerator (`unfinished_batch`, `finish_batch`).
"""

import tensorflow as tf

IMAGE_SIZE = 224
RESIZE_SHORTER = 256
# Per-channel mean of the ImageNet training set, RGB, in [0, 255] pixel units.
MEAN_RGB = (123.68, 116.78, 103.94)
# PCA of ImageNet RGB pixels in [0, 1] units (docs/paper.md); EIGVEC holds the rows as printed there.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
PCA_STD = 0.1
AUGMENTATIONS = ("paper", "inception")


def decode_image(image_bytes):
    """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB [H, W, 3] (grey -> RGB).

    Args:
      image_bytes: scalar string tensor.

    Returns:
      uint8 tensor [H, W, 3].
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _central_square_window(height, width):
    side = tf.minimum(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _resize_square(image, size):
    """Rescales a square image to size x size, keeping its dtype; a no-op when it already fits."""

    def resize():
        resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        if image.dtype == tf.uint8:
            return tf.saturate_cast(tf.round(resized), tf.uint8)
        return tf.cast(resized, image.dtype)

    image = tf.cond(tf.equal(tf.shape(image)[0], size), lambda: tf.identity(image), resize)
    image.set_shape([size, size, 3])
    return image


def _square(image, resize_shorter):
    """The paper's 256 x 256 central patch of a decoded image of any size."""
    shape = tf.shape(image)
    top, left, side = _central_square_window(shape[0], shape[1])
    return _resize_square(image[top : top + side, left : left + side], resize_shorter)


def check_sizes(image_size, resize_shorter):
    if not 0 < image_size <= resize_shorter:
        raise ValueError(
            f"need 0 < image_size <= resize_shorter, got image_size={image_size}, "
            f"resize_shorter={resize_shorter}"
        )


def center_crop(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """Returns the central image_size crop of the 256 square, same dtype as `image` ([H, W, 3])."""
    check_sizes(image_size, resize_shorter)
    offset = (resize_shorter - image_size) // 2
    return _square(image, resize_shorter)[offset : offset + image_size, offset : offset + image_size]


def subtract_mean(images):
    """Casts images in [0, 255] to float32 and subtracts the ImageNet RGB mean."""
    return tf.cast(images, tf.float32) - tf.constant(MEAN_RGB, tf.float32)


def preprocess_for_eval(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """Single-crop evaluation preprocessing, shared by evaluation and the serving signature.

    Args:
      image: decoded image [H, W, 3], uint8 or float in [0, 255], any size.
      image_size: crop size.
      resize_shorter: the shorter side is rescaled to this first (the paper's 256).

    Returns:
      float32 [image_size, image_size, 3], mean subtracted.
    """
    return subtract_mean(center_crop(image, image_size, resize_shorter))


def ten_crops_uint8(image, image_size, resize_shorter):
    check_sizes(image_size, resize_shorter)
    square = _square(image, resize_shorter)
    far, mid = resize_shorter - image_size, (resize_shorter - image_size) // 2
    crops = [
        square[y : y + image_size, x : x + image_size]
        for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))
    ]
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def ten_crop(image, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER):
    """The paper's test-time crops of the 256 square: corners TL, TR, BL, BR, centre, then mirrors.

    Args:
      image: decoded image [H, W, 3], uint8 or float in [0, 255], any size.
      image_size: crop size.
      resize_shorter: the shorter side is rescaled to this first.

    Returns:
      float32 [10, image_size, image_size, 3], mean subtracted.
    """
    return subtract_mean(ten_crops_uint8(image, image_size, resize_shorter))


def training_draws(seed, count, image_size, resize_shorter, augment="paper", pca_std=PCA_STD):
    """The random draws of `count` training images at once, stateless from `seed`.

    One op per kind for all of them: drawn image by image, the same draws cost the input
    pipeline more CPU than the crop's decoding saves (python -m alexnet_tf.benchmark --mode=input).
    Row i of each belongs to image i; row i does not depend on `count`.

    Args:
      seed: int64 [2] stateless seed.
      count: images.
      image_size, resize_shorter, augment: as in decode_and_random_crop.
      pca_std: standard deviation of the lighting alpha.

    Returns:
      (crop, flip, alpha): each image's `crop` draw for decode_and_random_crop (int32 [count, 2]
      offsets for "paper", int64 [count, 2] box seeds for "inception"), bool [count] mirror it,
      float32 [count, 3] PCA lighting alpha ~ N(0, pca_std) (for augment_batch).
    """
    check_sizes(image_size, resize_shorter)
    crop_seed, flip_seed, alpha_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if augment == "paper":
        crop = tf.random.stateless_uniform(
            [count, 2], crop_seed, 0, resize_shorter - image_size + 1, tf.int32
        )
    elif augment == "inception":
        crop = tf.random.stateless_uniform([count, 2], crop_seed, None, None, tf.int64)
    else:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    flip = tf.random.stateless_uniform([count], flip_seed) < 0.5
    return crop, flip, tf.random.stateless_normal([count, 3], alpha_seed, stddev=pca_std)


def _random_paper_crop(image_bytes, image_size, resize_shorter, offset=None, shorter_side=None):
    """Random image_size crop of the central 256 square, decoding only the crop where possible."""
    if offset is None:
        offset = tf.random.uniform([2], 0, resize_shorter - image_size + 1, tf.int32)
    dy, dx = tf.unstack(offset)

    def fused(shape):
        top, left, _ = _central_square_window(shape[0], shape[1])
        window = tf.stack([top + dy, left + dx, image_size, image_size])
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    if shorter_side == resize_shorter:
        # The converter's output (schema.converted_shorter_side): no per-image checks, whose
        # two tf.conds cost about as much CPU as the random draws did.
        return fused(tf.image.extract_jpeg_shape(image_bytes))

    def general():
        square = _square(decode_image(image_bytes), resize_shorter)
        return square[dy : dy + image_size, dx : dx + image_size]

    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(
        is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes), lambda: tf.zeros([3], tf.int32)
    )
    # JPEG with shorter side 256: decode the crop only. Anything else (other sizes, PNG
    # records) is decoded whole and rescaled.
    fits = tf.logical_and(is_jpeg, tf.equal(tf.minimum(shape[0], shape[1]), resize_shorter))
    return tf.cond(fits, lambda: fused(shape), general)


def _random_inception_crop(image_bytes, image_size, seed=None):
    """Random-resized crop (8%-100% of the area, aspect 3/4-4/3) as in Inception/ResNet training."""
    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(
        is_jpeg, lambda: tf.image.extract_jpeg_shape(image_bytes), lambda: tf.shape(decode_image(image_bytes))
    )
    box = dict(
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    if seed is None:
        begin, size, _ = tf.image.sample_distorted_bounding_box(shape, **box)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(shape, seed=seed, **box)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.cond(
        is_jpeg,
        lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3),
        lambda: tf.slice(decode_image(image_bytes), begin, size),
    )
    resized = tf.image.resize(crop, [image_size, image_size], method="bilinear", antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def decode_and_random_crop(
    image_bytes,
    image_size=IMAGE_SIZE,
    resize_shorter=RESIZE_SHORTER,
    augment="paper",
    crop=None,
    shorter_side=None,
):
    """The per-image part of training preprocessing: decode and random crop, still uint8.

    Args:
      image_bytes: scalar string tensor (JPEG; PNG/GIF/BMP also work, more slowly).
      image_size: crop size.
      resize_shorter: "paper" crops come from the central square rescaled to this size.
      augment: "paper" (random crop of the 256 square) or "inception" (random-resized crop).
      crop: this image's row of training_draws' `crop` (the same row, the same crop); None
        draws from TensorFlow's global generator.
      shorter_side: the shorter side that every image is known to have, as a 3-channel JPEG
        (schema.converted_shorter_side), or None. When it equals resize_shorter, "paper"
        decodes the crop without checking the image; otherwise each image is checked and
        anything else is decoded whole and rescaled.

    Returns:
      uint8 [image_size, image_size, 3].
    """
    check_sizes(image_size, resize_shorter)
    if augment == "paper":
        image = _random_paper_crop(image_bytes, image_size, resize_shorter, crop, shorter_side)
    elif augment == "inception":
        image = _random_inception_crop(image_bytes, image_size, crop)
    else:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    image.set_shape([image_size, image_size, 3])
    return image


def pca_lighting(images, alpha):
    """Adds the paper's PCA lighting noise `eigvec @ (alpha * eigval)` to every pixel.

    Args:
      images: float32 [..., H, W, 3] in [0, 255] units.
      alpha: float32 [..., 3], one draw per image (the paper draws alpha ~ N(0, 0.1)).

    Returns:
      images + the per-image RGB offset (no clipping, as in the paper).
    """
    return images + _lighting_rgb(alpha)[..., tf.newaxis, tf.newaxis, :]


def _lighting_rgb(alpha):
    eigval = tf.constant(PCA_EIGVAL, tf.float32) * 255.0
    return tf.linalg.matvec(tf.constant(PCA_EIGVEC, tf.float32), alpha * eigval)


def _flip_and_offset(images, flip, offset):
    """float32(images, mirrored where `flip`) + a per-image RGB offset; images [B, H, W, 3]."""
    images = tf.where(flip[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, axis=[2]), images)
    return tf.cast(images, tf.float32) + offset[:, tf.newaxis, tf.newaxis, :]


# Op by op, TensorFlow's CPU kernels spend ~0.4 ms per 224 image on this (a generic broadcasting
# add over 3-channel pixels, and a reverse); one XLA loop over the batch spends ~0.04 ms
# (python -m alexnet_tf.benchmark --mode=input). The random draws stay outside: XLA ignores op seeds.
_flip_and_offset_jit = tf.function(_flip_and_offset, jit_compile=True)


def _flip_and_offset_xla(images, flip, offset):
    # Pinned to the host, where tf.data runs: a GPU placement would copy the batch twice.
    with tf.device("/device:CPU:0"):
        return _flip_and_offset_jit(images, flip, offset)


def unfinished_batch(images, pca_std=PCA_STD, flip=None, alpha=None):
    """A training batch with its per-pixel work still to do, for finish_batch.

    Args:
      images: uint8 [B, H, W, 3] crops.
      pca_std: standard deviation of the lighting alpha (0 turns lighting off).
      flip, alpha: bool [B] and float32 [B, 3], as training_draws gives them; None draws both
        from TensorFlow's global generator.

    Returns:
      {"pixels": the uint8 images, "flip": bool [B] mirror them, "offset": float32 [B, 3] the
      PCA lighting minus the ImageNet mean, to add to every pixel}.
    """
    batch = tf.shape(images)[0]
    if flip is None:
        flip = tf.random.uniform([batch]) < 0.5
    if alpha is None:
        alpha = tf.random.normal([batch, 3], stddev=pca_std)
    # One add does both the lighting and the mean subtraction.
    offset = _lighting_rgb(alpha) - tf.constant(MEAN_RGB, tf.float32)
    return {"pixels": images, "flip": flip, "offset": offset}


def finish_batch(batch):
    """float32 mean-subtracted images of an unfinished_batch: flipped, cast, lighting and mean added.

    One XLA kernel on the device it runs on: the train step calls it on the accelerator, where
    it reads the 150 KB uint8 crop of each image instead of the host writing 600 KB of float32
    and copying it over (pipelines.training_dataset's finish_on_host).
    """
    return _flip_and_offset_jit(batch["pixels"], batch["flip"], batch["offset"])


def finished(images):
    """`images` as float32 model input: finish_batch of an unfinished batch, anything else unchanged."""
    return finish_batch(images) if isinstance(images, dict) else images


def augment_batch(images, pca_std=PCA_STD, jit_compile=True, flip=None, alpha=None):
    """The per-batch part of training preprocessing: flip, float32, PCA lighting, mean.

    Args:
      images: uint8 [B, H, W, 3].
      pca_std: standard deviation of the lighting alpha (0 turns lighting off).
      jit_compile: run the per-pixel work as one XLA kernel on the host (same result, ~10x
        less CPU).
      flip, alpha: as in unfinished_batch.

    Returns:
      float32 [B, H, W, 3], mean subtracted.
    """
    batch = unfinished_batch(images, pca_std, flip, alpha)
    finish = _flip_and_offset_xla if jit_compile else _flip_and_offset
    return finish(batch["pixels"], batch["flip"], batch["offset"])


def subtract_mean_batch(images, jit_compile=True):
    """subtract_mean for [..., H, W, 3] batches, as one XLA kernel: bit-identical, ~10x cheaper."""
    if not jit_compile:
        return subtract_mean(images)
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
    count = tf.shape(flat)[0]
    offset = tf.broadcast_to(-tf.constant(MEAN_RGB, tf.float32), [count, 3])
    return tf.reshape(_flip_and_offset_xla(flat, tf.zeros([count], tf.bool), offset), shape)


def preprocess_for_train(
    image_bytes, image_size=IMAGE_SIZE, resize_shorter=RESIZE_SHORTER, augment="paper", pca_std=PCA_STD
):
    """Full training preprocessing of one image (the pipeline splits it at the batch boundary).

    Args:
      image_bytes: scalar string tensor.
      image_size: crop size.
      resize_shorter: see decode_and_random_crop.
      augment: "paper" or "inception".
      pca_std: standard deviation of the lighting alpha.

    Returns:
      float32 [image_size, image_size, 3], mean subtracted.
    """
    image = decode_and_random_crop(image_bytes, image_size, resize_shorter, augment)
    return augment_batch(image[tf.newaxis], pca_std, jit_compile=False)[0]
