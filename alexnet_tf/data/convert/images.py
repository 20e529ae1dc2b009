"""One input image judged by its bytes: sniffing, decoding, repairing, resizing, the Example.

The format comes from the magic bytes, never the file name: CMYK/grayscale JPEGs and PNG/GIF/BMP/
WebP content become RGB JPEGs ("repaired"), and an empty, truncated, corrupt or non-image file
raises BadImageError with the reason.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import tensorflow as tf

from alexnet_tf.data.schema import (
    CHANNELS_KEY,
    COLORSPACE_KEY,
    ENCODED_KEY,
    FILENAME_KEY,
    FORMAT_KEY,
    HEIGHT_KEY,
    LABEL_KEY,
    LABEL_OFFSET,
    SYNSET_KEY,
    TEXT_KEY,
    WIDTH_KEY,
)

DEFAULT_RESIZE_SHORTER = 256
# 95, not 90: resized images are encoded a second time on top of the originals' own
# compression; at 95 the added error stays below that of the originals (~q75-q90) for
# about 1.4x the bytes of q90, and the model garden itself re-encodes at 100.
DEFAULT_QUALITY = 95

_JPEG_NAME_SUFFIXES = (".jpeg", ".jpg", ".jpe")


class BadImageError(ValueError):
    """One input file cannot be turned into an RGB JPEG; the message is the reason."""


class ConvertedImage(NamedTuple):
    encoded: bytes  # JPEG bytes, 3 channels
    height: int
    width: int
    repair: str | None  # why the bytes differ from the input for reasons other than resizing


def sniff_format(data: bytes) -> str | None:
    """Returns the image format that the magic bytes announce ("JPEG", "PNG", ...) or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    return None


class _JpegFrame(NamedTuple):
    components: int  # 1 grayscale, 3 YCbCr (or RGB), 4 CMYK/YCCK
    height: int
    width: int


def _jpeg_frame(data: bytes) -> _JpegFrame | None:
    """Reads the frame header (SOFn) of a JPEG; None when there is none before the scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 >= len(data):
                return None
            return _JpegFrame(
                data[i + 9],
                int.from_bytes(data[i + 5 : i + 7], "big"),
                int.from_bytes(data[i + 7 : i + 9], "big"),
            )
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _decode_rgb(data: bytes, fmt: str, shrink: int = 1) -> tf.Tensor:
    if fmt == "JPEG":
        # libjpeg turns grayscale and CMYK/YCCK into RGB itself (checked on TF 2.21), and
        # `ratio` scales in the DCT domain, far cheaper than decoding a big photo in full.
        # TF's default IDCT is the fast one, which here doubles the error against the truth.
        return tf.io.decode_jpeg(data, channels=3, ratio=shrink, dct_method="INTEGER_ACCURATE")
    image = tf.io.decode_image(data, channels=0, expand_animations=False)  # GIF: first frame
    if image.shape[-1] in (2, 4):  # composite transparency over white, as viewers show it
        alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
        color = tf.cast(image[..., :-1], tf.float32)
        image = tf.cast(tf.round(color * alpha + 255.0 * (1.0 - alpha)), tf.uint8)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def _decode_failure(data: bytes, fmt: str, error: Exception) -> str:
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(error, "message", str(error)))
    message = message.splitlines()[0].split(" [Op:")[0] if message else type(error).__name__
    if fmt == "JPEG" and data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return f"truncated JPEG: no end-of-image marker ({message})"
    if fmt == "PNG" and b"IEND" not in data[-16:]:
        return f"truncated PNG: no IEND chunk ({message})"
    return f"corrupt {fmt} data: TensorFlow cannot decode it ({message})"


def resize_shorter_side(image: tf.Tensor, shorter: int) -> tf.Tensor:
    """Resizes so the shorter side is `shorter`, keeping aspect ratio and the whole image.

    Shrinking averages areas (a box filter: no aliasing, and ~5x faster than TF's antialiased
    bilinear); enlarging interpolates bilinearly.

    Args:
      image: uint8 [height, width, 3] tensor (eager).
      shorter: target length of the shorter side in pixels.
    Returns:
      uint8 [new_height, new_width, 3] tensor.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    if height <= width:
        size = (shorter, max(shorter, round(width * shorter / height)))
    else:
        size = (max(shorter, round(height * shorter / width)), shorter)
    method = "area" if min(height, width) > shorter else "bilinear"
    with tf.device("/CPU:0"):
        resized = tf.image.resize(image, size, method=method)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def convert_image(
    data: bytes, name: str, resize_shorter: int = DEFAULT_RESIZE_SHORTER, quality: int = DEFAULT_QUALITY
) -> ConvertedImage:
    """Checks one input by content and returns it as an RGB JPEG.

    An RGB JPEG that needs no resizing keeps its original bytes (no second compression).

    Args:
      data: the file's bytes.
      name: the file's name, used only to word the repair reason.
      resize_shorter: shorter side in pixels after resizing; 0 keeps the original size.
      quality: JPEG quality for images that are re-encoded.
    Returns:
      A ConvertedImage; `repair` says why the content changed (CMYK, PNG, ...) or is None.
    Raises:
      BadImageError: empty, truncated, corrupt or not an image; the message is the reason.
    """
    if not data:
        raise BadImageError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImageError(f"not an image: unrecognised content starting {data[:8]!r}")
    repair, shrink = None, 1
    if fmt == "JPEG":
        frame = _jpeg_frame(data)
        if frame is None or frame.components not in (1, 3, 4):
            raise BadImageError(
                "corrupt JPEG: no readable frame header"
                if frame is None
                else f"unsupported JPEG with {frame.components} colour components"
            )
        repair = {1: "grayscale JPEG converted to RGB", 4: "CMYK JPEG converted to RGB"}.get(frame.components)
        while (
            resize_shorter
            and shrink < 8
            and min(frame.height, frame.width) // (2 * shrink) >= 2 * resize_shorter
        ):  # keep 2x margin for the area resize
            shrink *= 2
    else:
        where = "under a JPEG file name" if name.lower().endswith(_JPEG_NAME_SUFFIXES) else "file"
        repair = f"{fmt} content {where} re-encoded as JPEG"
    with tf.device("/CPU:0"):
        try:
            image = _decode_rgb(data, fmt, shrink)
        except (tf.errors.OpError, ValueError) as e:
            raise BadImageError(_decode_failure(data, fmt, e)) from None
        height, width = int(image.shape[0]), int(image.shape[1])
        if height == 0 or width == 0:
            raise BadImageError(f"{fmt} image with no pixels ({height}x{width})")
        needs_resize = resize_shorter > 0 and min(height, width) != resize_shorter
        if not needs_resize and repair is None:
            return ConvertedImage(data, height, width, None)
        if needs_resize:
            image = resize_shorter_side(image, resize_shorter)
        encoded = tf.io.encode_jpeg(image, format="rgb", quality=quality).numpy()
    return ConvertedImage(encoded, int(image.shape[0]), int(image.shape[1]), repair)


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    image: ConvertedImage, filename: str, label: int, synset: str, text: str
) -> tf.train.Example:
    """Returns the model-garden `tf.train.Example` for one converted image."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                ENCODED_KEY: _bytes_feature(image.encoded),
                FORMAT_KEY: _bytes_feature(b"JPEG"),
                HEIGHT_KEY: _int_feature(image.height),
                WIDTH_KEY: _int_feature(image.width),
                CHANNELS_KEY: _int_feature(3),
                COLORSPACE_KEY: _bytes_feature(b"RGB"),
                FILENAME_KEY: _bytes_feature(filename.encode()),
                LABEL_KEY: _int_feature(label + LABEL_OFFSET),
                SYNSET_KEY: _bytes_feature(synset.encode()),
                TEXT_KEY: _bytes_feature(text.encode()),
            }
        )
    )
