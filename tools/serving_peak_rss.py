"""Peak RSS of one serving_default request, each case in a fresh process (docs/serving.md).

    PYTHONPATH=. python tools/serving_peak_rss.py /tmp/rss
    PYTHONPATH=. python tools/serving_peak_rss.py /tmp/rss --smoke   # the smallest request and the bomb only

Exports a small stand-in classifier with the default limits, then for each request loads the
SavedModel in a new interpreter, warms it up with one small JPEG, sends the request and prints
the process's peak RSS before and after it: VmHWM of /proc/self/status, the peak of this
process image only (getrusage's ru_maxrss would carry over the parent's peak across exec).
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np

CHILD = """
import json, sys
import numpy as np
import tensorflow as tf
def peak_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2], allow_pickle=True).tolist()
serve(image_bytes=tf.constant([images[-1]]))
before = peak_mib()
try:
    outcome = str(serve(image_bytes=tf.constant(images[:-1]))["probabilities"].shape)
except tf.errors.InvalidArgumentError as e:
    outcome = "refused: " + next((l for l in e.message.splitlines() if "image_bytes[" in l), e.message)[:110]
after = peak_mib()
print(json.dumps([before, after, outcome]))
"""


def black_png(height, width):
    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    compressor, row = zlib.compressobj(9), bytes(3 * width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def main(workdir, smoke=False):
    import keras
    import tensorflow as tf

    from alexnet_tf.serving import saved_model

    os.makedirs(workdir, exist_ok=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 8, strides=8)(inputs))
    path = saved_model.export_saved_model(
        keras.Model(inputs, keras.layers.Dense(7)(x)), os.path.join(workdir, "model"), warmup=False
    )

    def jpeg(height, width):
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        image = np.stack([x / width * 255, y / height * 255, (x + y) % 256], -1)
        return tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy()

    small = jpeg(375, 500)
    # Each request is built only when its case runs: --smoke sends two, and building the others'
    # 40 MP images (a JPEG encode, PNGs deflated at level 9) took most of its CPU time.
    cases = {
        "1 x 375x500 JPEG": lambda: [small],
        "64 x 375x500 JPEG": lambda: [small] * 64,
        "1 x 7744x5164 JPEG (40 MP)": lambda: [jpeg(5164, 7744)],
        "1 x 7744x5164 PNG (40 MP)": lambda: [black_png(5164, 7744)],
        "4 x 3872x2582 PNG (4 x 10 MP)": lambda: [black_png(2582, 3872)] * 4,
        "10 x 7744x5164 PNG (10 x 40 MP)": lambda: [black_png(5164, 7744)] * 10,
        "1 x 20000x20000 PNG (bomb)": lambda: [black_png(20000, 20000)],
    }
    if smoke:
        cases = {name: cases[name] for name in ("1 x 375x500 JPEG", "1 x 20000x20000 PNG (bomb)")}
    for name, make_images in cases.items():
        request = os.path.join(workdir, "request.npy")
        np.save(request, np.array(make_images() + [small], dtype=object), allow_pickle=True)
        result = subprocess.run(
            [sys.executable, "-c", CHILD, path, request], capture_output=True, text=True, check=True
        )
        before, after, outcome = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{name:34s} peak RSS {before:5d} MiB -> {after:5d} MiB  {outcome}", flush=True)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--smoke"]
    if [a for a in arguments if a.startswith("-")] or len(arguments) > 1:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if {"-h", "--help", "--helpshort"} & set(arguments) else 2)
    main(arguments[0] if arguments else "/tmp/serving_peak_rss", smoke="--smoke" in sys.argv[1:])
