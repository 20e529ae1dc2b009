"""The image-header checks every bytes signature makes before it decodes anything.

From the first bytes of an encoded image: its format (magic bytes: JPEG, PNG, GIF or BMP), its
size (JPEG frame header, PNG IHDR, GIF logical screen, BMP info header), whether a JPEG holds
an end-of-image marker, and the scale a large JPEG is decoded at. A failed check is an
InvalidArgumentError that names the item and the problem, not a decoder's bare error.
"""

import tensorflow as tf

from alexnet_tf.data import preprocessing

# Leading bytes of what tf.io.decode_image reads; checked first so that a request with other
# bytes fails with a message that names the item, not only "Unknown image file format".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")

# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: cost and memory drop
# with the square of the ratio) only while its shorter side stays >= this many times the
# 256-pixel resize target. With 4 the antialiased resize still shrinks by >= 4x and the
# 224 crop differs from the full decode's by < 1 grey level on average
# (tests/serving/test_export.py); with 2 (the converter's margin) a texture near the crop's
# Nyquist limit differed by up to 6 levels, from the central square's offset rounding to
# whole pixels at the smaller scale.
_JPEG_SCALE_MARGIN = 4
JPEG_RATIOS = (1, 2, 4, 8)
# Most JPEG segments scanned for the frame header (real files have < 30 before it).
_JPEG_MAX_SEGMENTS = 1000


def image_header(index, encoded, max_pixels):
    """int32 [height, width, ratio] of one encoded image, from its header; asserts the limits.

    Nothing is decoded: the size comes from the JPEG frame header (SOFn), PNG IHDR, GIF
    logical screen or BMP info header, so an image over `max_pixels` costs only this. A
    JPEG must also hold an end-of-image marker after its frame header: a truncated one
    would otherwise fail inside the decoder with no word of which item it was.

    Args:
      index: the item's place in the request, for the messages.
      encoded: scalar tf.string, the item's bytes.
      max_pixels: an image with more pixels (width x height) fails the request.
    """
    length = tf.strings.length(encoded)
    head = _bytes_at(encoded, 0, 26)
    fmt = tf.stack([tf.reduce_all(head[: len(m)] == list(m)) for m in _MAGIC])
    is_jpeg, is_png, is_gif, _ = tf.unstack(fmt)
    known = tf.reduce_any(fmt)
    shown = tf.strings.substr(encoded, 0, 4)
    check_known = tf.debugging.Assert(
        known,
        [
            tf.strings.format(
                "image_bytes[{}] is not a JPEG, PNG, GIF or BMP image ({} bytes starting with {})",
                (index, length, shown),
            )
        ],
    )
    with tf.control_dependencies([check_known]):
        jpeg_height, jpeg_width, jpeg_state = tf.cond(
            is_jpeg, lambda: _jpeg_size(encoded), lambda: (0, 0, _JPEG_FOUND)
        )
    b = tf.cast(head, tf.int64)
    height = tf.case(
        [
            (is_jpeg, lambda: tf.cast(jpeg_height, tf.int64)),
            (is_png, lambda: b[20] * 2**24 + b[21] * 2**16 + b[22] * 2**8 + b[23]),
            (is_gif, lambda: b[8] + b[9] * 2**8),
        ],
        default=lambda: tf.abs(_int32_le(head[22:26])),
    )  # BMP: negative = top-down
    width = tf.case(
        [
            (is_jpeg, lambda: tf.cast(jpeg_width, tf.int64)),
            (is_png, lambda: b[16] * 2**24 + b[17] * 2**16 + b[18] * 2**8 + b[19]),
            (is_gif, lambda: b[6] + b[7] * 2**8),
        ],
        default=lambda: tf.abs(_int32_le(head[18:22])),
    )
    min_length = tf.where(is_jpeg, 4, tf.where(is_png, 24, tf.where(is_gif, 10, 26)))
    check_header = tf.debugging.Assert(
        tf.logical_and(length >= min_length, tf.equal(jpeg_state, _JPEG_FOUND)),
        [
            tf.strings.join(
                [
                    tf.strings.format("image_bytes[{}] is a truncated or corrupt image: ", index),
                    tf.gather(_JPEG_PROBLEMS, jpeg_state),
                    "; send the whole file",
                ]
            )
        ],
    )
    with tf.control_dependencies([check_header]):
        pixels = height * width
    check_size = tf.debugging.Assert(
        pixels <= max_pixels,
        [
            tf.strings.format(
                "image_bytes[{}] is {}x{} pixels ({}), over the limit of "
                + str(max_pixels)
                + " pixels per image (max_pixels); send a smaller image",
                (index, width, height, pixels),
            )
        ],
    )
    with tf.control_dependencies([check_size]):
        check_end = tf.cond(is_jpeg, lambda: _jpeg_has_end(encoded), lambda: True)
    check_whole = tf.debugging.Assert(
        check_end,
        [
            tf.strings.format(
                "image_bytes[{}] is a truncated JPEG: no end-of-image marker after its {}x{} frame "
                "header; send the whole file",
                (index, width, height),
            )
        ],
    )
    shorter = tf.minimum(height, width)
    target = _JPEG_SCALE_MARGIN * preprocessing.RESIZE_SHORTER
    ratio = tf.constant(1, tf.int64)
    for r in JPEG_RATIOS[1:]:
        ratio = tf.where(tf.logical_and(is_jpeg, shorter >= r * target), tf.constant(r, tf.int64), ratio)
    with tf.control_dependencies([check_whole]):
        return tf.cast(tf.stack([height, width, ratio]), tf.int32)


# States of the JPEG frame-header scan, and what they mean as an error.
_JPEG_SCANNING, _JPEG_FOUND, _JPEG_NO_FRAME, _JPEG_NOT_MARKER, _JPEG_CUT = range(5)
_JPEG_PROBLEMS = [
    "the JPEG frame header was not found in the first segments",
    "",
    "the JPEG has no frame header before its image data",
    "the JPEG's segments do not follow one another",
    "the file ends inside the JPEG header",
]


def _bytes_at(encoded, position, count):
    """uint8 [count]: the bytes of a scalar string from `position`, zero-padded past its end."""
    position = tf.minimum(tf.cast(position, tf.int32), tf.strings.length(encoded))
    piece = tf.strings.join([tf.strings.substr(encoded, position, count), b"\0" * count])
    return tf.reshape(tf.io.decode_raw(tf.strings.substr(piece, 0, count), tf.uint8), [count])


def _int32_le(four):
    value = tf.reduce_sum(tf.cast(four, tf.int64) * [1, 2**8, 2**16, 2**24])
    return tf.where(value >= 2**31, value - 2**32, value)


def _jpeg_size(encoded):
    """(height, width, state) of a JPEG from its frame header (SOF0..SOF15), walking the segments."""
    length = tf.strings.length(encoded)

    def body(position, state, height, width):
        b = tf.cast(_bytes_at(encoded, position, 9), tf.int32)
        marker = b[1]
        is_frame = (
            (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4) & (marker != 0xC8) & (marker != 0xCC)
        )
        standalone = (marker == 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
        state = tf.where(
            position + 4 > length,
            _JPEG_CUT,
            tf.where(
                b[0] != 0xFF,
                _JPEG_NOT_MARKER,
                tf.where(
                    is_frame,
                    tf.where(position + 9 > length, _JPEG_CUT, _JPEG_FOUND),
                    tf.where((marker == 0xD9) | (marker == 0xDA), _JPEG_NO_FRAME, _JPEG_SCANNING),
                ),
            ),
        )
        step = tf.where(marker == 0xFF, 1, tf.where(standalone, 2, 2 + b[2] * 256 + b[3]))
        found = tf.equal(state, _JPEG_FOUND)
        return (
            tf.where(tf.equal(state, _JPEG_SCANNING), position + step, position),
            state,
            tf.where(found, b[5] * 256 + b[6], height),
            tf.where(found, b[7] * 256 + b[8], width),
        )

    _, state, height, width = tf.while_loop(
        lambda position, state, *_: tf.equal(state, _JPEG_SCANNING),
        body,
        (tf.constant(2), tf.constant(_JPEG_SCANNING), tf.constant(0), tf.constant(0)),
        maximum_iterations=_JPEG_MAX_SEGMENTS,
    )
    return height, width, state


def _jpeg_has_end(encoded):
    """Whether a JPEG holds an end-of-image marker (FF D9) after its first 2 bytes.

    Entropy-coded data never holds FF D9 (a data byte FF is stuffed as FF 00), so a file cut
    short has none, unless an embedded EXIF thumbnail ends before the cut; bytes after the
    marker (e.g. a phone's appended video) are allowed. The last 64 bytes are looked at first.
    """
    length = tf.strings.length(encoded)
    tail = tf.strings.substr(encoded, tf.maximum(length - 64, 2), 64)
    found_in_tail = tf.size(tf.strings.split(tail, sep=b"\xff\xd9")) > 1
    return tf.cond(
        found_in_tail,
        lambda: True,
        lambda: tf.size(tf.strings.split(tf.strings.substr(encoded, 2, length), sep=b"\xff\xd9")) > 1,
    )
