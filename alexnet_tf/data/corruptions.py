"""The 15 ImageNet-C corruptions (Hendrycks and Dietterich, ICLR 2019) and how the benchmark scores them.

Each corruption is written here from the published definition (hendrycks/robustness,
`ImageNet-C/create_c/make_imagenet_c.py`, with the severity parameters listed there) in NumPy
and TensorFlow, because the maintained package `imagecorruptions` (1.1.2) does not run with
NumPy 2 and scikit-image 0.26 (`np.float_`, `multichannel=`, `pkg_resources`) and needs OpenCV
and SciPy. Where the reference calls a library, the same operation is done with matrices:

- Gaussian filters (scikit-image's `gaussian`, truncate 4, edge mode "nearest"; elastic's
  "reflect") and the bilinear zoom (SciPy's `zoom`, order 1) are 1-D operators applied along
  rows and columns; the defocus disk is OpenCV's, its filter a sum of shifted images;
- motion blur (ImageMagick in the reference) is the kernel `imagecorruptions` uses in its
  place: one-sided Gaussian weights along the blur direction, edges repeated;
- glass blur swaps each pixel with a random neighbour as the reference does, but in groups of
  pixels far enough apart that their swaps cannot touch, not one pixel at a time in raster
  order (the same local shuffle, a different draw order);
- pixelate is Pillow's BOX resize down and up; JPEG compression is TensorFlow's libjpeg at the
  published qualities;
- frost blends the image with a frost picture. The published frost photographs are not
  shipped with this package, so frost here is **an approximation**: a synthetic frost layer
  (cloudy ice and crystal streaks) drawn deterministically from the seed, with the mean and
  spread of each of the five photographs' colours. Its errors are not comparable to
  ImageNet-C's frost errors; every report says so (FROST_NOTE).

The benchmark corrupts the 224 x 224 centre crop of an image resized to 256, and saved its
images as JPEG quality 85 (`benchmark_crop` does the same). Every draw comes from a NumPy
generator seeded by (seed, corruption, severity, image index), so a run repeats exactly.

Scoring (the paper's section 3): E[c, s] is the top-1 error under corruption c at severity s;
CE[c] = sum_s E[c, s] / sum_s E_AlexNet[c, s], mCE the mean CE over the 15 corruptions;
relative CE[c] = sum_s (E[c, s] - E_clean) / sum_s (E_AlexNet[c, s] - E_AlexNet_clean). Only
AlexNet's mean over the severities is published (ALEXNET_ERRORS), and the sums above are five
times those means, so the normalisation divides the mean over the severities asked for by
AlexNet's mean over all five: a run with fewer severities gets CEs that are not the benchmark's.
"""

import numpy as np
import tensorflow as tf

# The benchmark's order (the paper's Table and hendrycks/robustness ImageNet-C/test.py).
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
SAVED_JPEG_QUALITY = 85  # the quality ImageNet-C's images were saved with
DEFAULT_SEED = 2019

# AlexNet's top-1 error on ImageNet-C per corruption, the mean over the five severities: the
# torchvision AlexNet (alexnet-owt-4df8aa71.pth) that hendrycks/robustness ImageNet-C/test.py
# evaluates; the values as google-research/augmix imagenet.py lists them ("Raw AlexNet errors
# taken from https://github.com/hendrycks/robustness"), in CORRUPTIONS order.
ALEXNET_ERRORS = dict(
    zip(
        CORRUPTIONS,
        (
            0.886428,
            0.894468,
            0.922640,
            0.819880,
            0.826268,
            0.785948,
            0.798360,
            0.866816,
            0.826572,
            0.819324,
            0.564592,
            0.853204,
            0.646056,
            0.717840,
            0.606500,
        ),
    )
)
# Its clean top-1 error: torchvision's AlexNet, 56.522% top-1 (the paper's Table 1: 43.5).
ALEXNET_CLEAN_ERROR = 0.43478
FROST_NOTE = (
    "frost is an approximation: a synthetic frost layer replaces the benchmark's frost "
    "photographs, so its errors are not comparable to ImageNet-C's"
)

# The colour mean and standard deviation (RGB, 0-255) of the five frost photographs the
# reference draws from (frost1.png ... frost5.jpg; frost2 and frost3 are the same picture).
_FROST_COLOURS = (
    ((77.7, 149.1, 165.7), (26.9, 16.5, 15.3)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((137.6, 152.8, 165.2), (28.5, 28.5, 29.9)),
    ((112.4, 123.4, 134.8), (44.4, 43.3, 41.7)),
)

# The published severity parameters, severity 1 first (make_imagenet_c.py).
PARAMETERS = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise standard deviation
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # fraction of values set to 0 or 1
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),  # disk radius, alias blur
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),  # sigma, delta, passes
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # radius, sigma
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),  # arange(1, a, b)
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),  # mean, std, zoom, threshold, blur radius, blur sigma, image weight
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),  # image, frost weights
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),  # strength, wibble decay
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to HSV value
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # scale about each channel's mean
    # alpha, sigma, affine shift; 244 where 224 was meant, as published
    "elastic_transform": (
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),  # side of the small image
    "jpeg_compression": (25, 18, 15, 10, 7),  # JPEG quality
}


def parameter(name, severity):
    """The published parameter of corruption `name` at `severity` (1-5)."""
    return PARAMETERS[name][severity - 1]


def image_rng(seed, name, severity, index):
    """The NumPy generator of one image's draws: a function of all four, nothing else."""
    return np.random.default_rng([int(seed), CORRUPTIONS.index(name), int(severity), int(index)])


# ----------------------------------------------------------------------------- linear operators


def fold_indices(index, size, mode):
    """Indices outside [0, size) mapped inside, as a border `mode` extends an image.

    "edge": the edge pixel repeats (SciPy/scikit-image "nearest"); "symmetric": mirrored with
    the edge repeated, d c b a | a b c d (SciPy "reflect"); "reflect": mirrored about the edge
    pixel, d c b | a b c d (OpenCV's default BORDER_REFLECT_101).
    """
    index = np.asarray(index)
    if mode == "edge":
        return np.clip(index, 0, size - 1)
    if mode == "symmetric":
        period = 2 * size
        folded = index % period
        return np.where(folded < size, folded, period - 1 - folded)
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(index)
        period = 2 * size - 2
        folded = index % period
        return np.where(folded < size, folded, period - folded)
    raise ValueError(f"unknown border mode {mode!r}")


def gaussian_operator(size, sigma, truncate=4.0, mode="edge"):
    """[size, size] matrix of a 1-D Gaussian filter (SciPy's: radius int(truncate * sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    rows = np.repeat(np.arange(size), taps.size)
    columns = fold_indices(np.arange(size)[:, None] + taps[None, :], size, mode).ravel()
    operator = np.zeros((size, size))
    np.add.at(operator, (rows, columns), np.tile(weights, size))
    return operator


def linear_zoom_operator(size, zoom):
    """[round(size * zoom), size] matrix of SciPy's order-1 zoom (corner pixels stay put)."""
    out = int(round(size * zoom))
    if out == 1 or size == 1:
        return np.ones((out, size)) / size
    position = np.arange(out) * (size - 1) / (out - 1)
    low = np.minimum(np.floor(position).astype(int), size - 2)
    frac = position - low
    operator = np.zeros((out, size))
    operator[np.arange(out), low] = 1 - frac
    operator[np.arange(out), low + 1] += frac
    return operator


def box_resize_operator(size, out):
    """[out, size] matrix of Pillow's BOX resampling along one axis."""
    scale = size / out
    support = 0.5 * max(scale, 1.0)
    operator = np.zeros((out, size))
    for j in range(out):
        centre = (j + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), size)
        x = (np.arange(low, high) - centre + 0.5) / max(scale, 1.0)
        weights = ((x > -0.5) & (x <= 0.5)).astype(float)
        operator[j, low:high] = weights / weights.sum()
    return operator


def apply_separable(image, rows, columns):
    """`rows @ image @ columns.T` for each channel of an [H, W, C] (or [H, W]) image."""
    planes = np.moveaxis(np.atleast_3d(image), -1, 0)  # [C, H, W]
    out = np.moveaxis(rows @ planes @ columns.T, 0, -1)
    return out[..., 0] if image.ndim == 2 else out


def gaussian_blur(image, sigma, truncate=4.0, mode="edge"):
    """scikit-image's `gaussian(image, sigma)` of an [H, W(, C)] image (channels apart)."""
    rows = gaussian_operator(image.shape[0], sigma, truncate, mode)
    columns = gaussian_operator(image.shape[1], sigma, truncate, mode)
    return apply_separable(image, rows, columns)


def clipped_zoom(image, zoom):
    """The reference's clipped zoom: the central 1/zoom of the image, zoomed back to its size."""
    height, width = image.shape[:2]
    operators = []
    for size in (height, width):
        crop = int(np.ceil(size / zoom))
        start = (size - crop) // 2
        operator = linear_zoom_operator(crop, zoom)
        trim = (operator.shape[0] - size) // 2
        full = np.zeros((size, size))
        full[:, start : start + crop] = operator[trim : trim + size]
        operators.append(full)
    return apply_separable(image, *operators)


def bilinear_sample(image, y, x, mode):
    """image [H, W, C] at float coordinates y, x [H, W] (order-1 interpolation, border `mode`)."""
    height, width = image.shape[:2]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    ys = fold_indices(y0, height, mode), fold_indices(y0 + 1, height, mode)
    xs = fold_indices(x0, width, mode), fold_indices(x0 + 1, width, mode)
    top = image[ys[0], xs[0]] * (1 - fx) + image[ys[0], xs[1]] * fx
    bottom = image[ys[1], xs[0]] * (1 - fx) + image[ys[1], xs[1]] * fx
    return top * (1 - fy) + bottom * fy


def filter2d(image, kernel, mode="reflect"):
    """OpenCV's `filter2D` (correlation, anchor at the centre) of an [H, W, C] image."""
    ky, kx = kernel.shape
    padded = np.pad(image, ((ky // 2, ky - 1 - ky // 2), (kx // 2, kx - 1 - kx // 2), (0, 0)), mode=mode)
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    for i, j in zip(*np.nonzero(kernel > 1e-9 * kernel.max())):
        out += kernel[i, j] * padded[i : i + height, j : j + width]
    return out


def disk_kernel(radius, alias_blur):
    """The reference's defocus kernel: a normalised disk, softened by a small Gaussian (OpenCV's)."""
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    taps = np.arange(-half, half + 1)
    disk = ((taps[:, None] ** 2 + taps[None, :] ** 2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    # cv2.GaussianBlur(disk, (ksize, ksize), alias_blur): a ksize-tap Gaussian, border reflect-101.
    offsets = np.arange(ksize) - ksize // 2
    weights = np.exp(-0.5 * (offsets / alias_blur) ** 2)
    weights /= weights.sum()
    size = disk.shape[0]
    operator = np.zeros((size, size))
    for offset, weight in zip(offsets, weights):
        np.add.at(
            operator, (np.arange(size), fold_indices(np.arange(size) + offset, size, "reflect")), weight
        )
    return operator @ disk @ operator.T


def motion_kernel_shifts(radius, sigma, angle):
    """[(weight, dy, dx)] of the motion blur: one-sided Gaussian weights stepping along `angle`."""
    width = 2 * radius + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    direction = np.sin(np.deg2rad(angle)), np.cos(np.deg2rad(angle))
    return [
        (weights[i], -int(np.ceil(i * direction[0] - 0.5)), -int(np.ceil(i * direction[1] - 0.5)))
        for i in range(width)
    ]


def motion_blur_image(image, radius, sigma, angle):
    """The motion blur of an [H, W(, C)] float image, edge pixels repeated."""
    height, width = image.shape[:2]
    out = np.zeros_like(image, dtype=np.float64)
    for weight, dy, dx in motion_kernel_shifts(radius, sigma, angle):
        if abs(dy) >= height or abs(dx) >= width:
            break
        rows = np.clip(np.arange(height) - dy, 0, height - 1)
        columns = np.clip(np.arange(width) - dx, 0, width - 1)
        out += weight * image[rows][:, columns]
    return out


def plasma_fractal(size, wibble_decay, rng):
    """A [size, size] diamond-square height map in [0, 1] (size a power of two), as the reference's fog."""
    heights = np.zeros((size, size))
    step, wibble = size, 100.0

    def jittered(total):
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        heights[half:size:step, half:size:step] = jittered(square)
        centres = heights[half:size:step, half:size:step]
        corners = heights[0:size:step, 0:size:step]
        heights[0:size:step, half:size:step] = jittered(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        )
        heights[half:size:step, 0:size:step] = jittered(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        )
        step //= 2
        wibble /= wibble_decay
    heights -= heights.min()
    return heights / heights.max()


def _power_of_two(n):
    return 1 << max(int(n) - 1, 0).bit_length()


def synthetic_frost(height, width, rng):
    """A frost layer [H, W, 3] in [0, 255]: cloudy ice and crystal streaks, coloured like one photograph."""
    mean, std = (np.array(v) for v in _FROST_COLOURS[rng.integers(len(_FROST_COLOURS))])
    size = _power_of_two(max(height, width))
    clouds = plasma_fractal(size, 1.6, rng)[:height, :width]
    crystals = np.zeros((height, width))
    count = max(1, height * width // 150)
    starts = rng.uniform(0, 1, (count, 2)) * (height, width)
    angles = rng.uniform(0, np.pi, count)
    lengths = rng.uniform(4, 30, count)
    steps = np.linspace(0, 1, 24)
    ys = starts[:, :1] + np.sin(angles)[:, None] * lengths[:, None] * steps
    xs = starts[:, 1:] + np.cos(angles)[:, None] * lengths[:, None] * steps
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    np.add.at(crystals, (ys[inside].astype(int), xs[inside].astype(int)), 1.0)
    crystals = gaussian_blur(crystals, 0.7)

    def standard(a):
        return (a - a.mean()) / max(a.std(), 1e-8)

    texture = standard(0.6 * standard(clouds) + 0.8 * standard(crystals))
    return np.clip(mean + std * texture[..., None], 0, 255)


# ----------------------------------------------------------------------------- the corruptions
# Each takes a float64 [H, W, 3] image in [0, 1], the severity's parameter and a generator,
# and returns the corrupted image in [0, 1].


def _gaussian_noise(x, c, rng):
    return x + rng.normal(size=x.shape, scale=c)


def _shot_noise(x, c, rng):
    return rng.poisson(x * c) / c


def _impulse_noise(x, c, rng):
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    return np.where(flipped, salted.astype(x.dtype), x)


def _defocus_blur(x, c, rng):
    return filter2d(x, disk_kernel(*c))


def _glass_blur(x, c, rng):
    sigma, delta, passes = c
    pixels = (np.clip(gaussian_blur(x, sigma), 0, 1) * 255).astype(np.uint8)
    height, width = pixels.shape[:2]
    stride = 2 * delta + 1  # swaps of pixels this far apart cannot touch the same pixel
    for _ in range(passes):
        for oy in reversed(range(stride)):
            for ox in reversed(range(stride)):
                hs = np.arange(height - delta - oy, delta, -stride)
                ws = np.arange(width - delta - ox, delta, -stride)
                if hs.size == 0 or ws.size == 0:
                    continue
                h, w = np.meshgrid(hs, ws, indexing="ij")
                dy, dx = rng.integers(-delta, delta, size=(2,) + h.shape)
                mine, theirs = pixels[h, w].copy(), pixels[h + dy, w + dx].copy()
                pixels[h, w] = theirs
                pixels[h + dy, w + dx] = mine
    return gaussian_blur(pixels / 255.0, sigma)


def _motion_blur(x, c, rng):
    return motion_blur_image(x, c[0], c[1], rng.uniform(-45, 45))


def _zoom_blur(x, c, rng):
    zooms = np.arange(1, c[0], c[1])
    total = x.copy()
    for zoom in zooms:
        total += clipped_zoom(x, zoom)
    return total / (len(zooms) + 1)


def _snow(x, c, rng):
    mean, std, zoom, threshold, radius, sigma, weight = c
    layer = rng.normal(size=x.shape[:2], loc=mean, scale=std)
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = motion_blur_image(np.clip(layer, 0, 1), radius, sigma, rng.uniform(-135, -45))
    layer = (np.round(np.clip(layer, 0, 1) * 255) / 255)[..., None]  # the reference's 8-bit layer
    grey = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
    x = weight * x + (1 - weight) * np.maximum(x, grey * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2)


def _frost(x, c, rng):
    frost = synthetic_frost(x.shape[0], x.shape[1], rng)
    return (c[0] * x * 255 + c[1] * frost) / 255


def _fog(x, c, rng):
    strength, decay = c
    top = x.max()
    size = _power_of_two(max(x.shape[:2]))
    fog = plasma_fractal(size, decay, rng)[: x.shape[0], : x.shape[1], None]
    return (x + strength * fog) * top / (top + strength)


def _brightness(x, c, rng):
    # HSV value up by c, hue and saturation kept: every channel scales by V'/V (grey for V = 0).
    value = x.max(axis=-1, keepdims=True)
    brighter = np.clip(value + c, 0, 1)
    return np.where(value > 0, x * brighter / np.maximum(value, 1e-12), brighter)


def _contrast(x, c, rng):
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _elastic_transform(x, c, rng):
    alpha, sigma, shift = c
    height, width = x.shape[:2]
    centre = np.float64([width, height]) // 2  # (x, y) points, as OpenCV's
    side = min(height, width) // 3
    source = np.array([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    target = source + rng.uniform(-shift, shift, size=source.shape)
    # The affine map source -> target; each output pixel samples the input at its inverse.
    forward = np.linalg.solve(np.c_[source, np.ones(3)], target).T  # [2, 3]
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)
    src_x = inverse[0, 0] * grid_x + inverse[0, 1] * grid_y + inverse[0, 2]
    src_y = inverse[1, 0] * grid_x + inverse[1, 1] * grid_y + inverse[1, 2]
    x = bilinear_sample(x, src_y, src_x, "reflect")
    dx = gaussian_blur(rng.uniform(-1, 1, size=(height, width)), sigma, 3.0, "symmetric") * alpha
    dy = gaussian_blur(rng.uniform(-1, 1, size=(height, width)), sigma, 3.0, "symmetric") * alpha
    return bilinear_sample(x, grid_y + dy, grid_x + dx, "symmetric")


def _pixelate(x, c, rng):
    height, width = x.shape[:2]
    small_h, small_w = int(height * c), int(width * c)
    pixels = x * 255

    def resize(image, out_h, out_w):  # Pillow: horizontal pass, then vertical, 8 bits after each
        image = np.round(
            apply_separable(image, np.eye(image.shape[0]), box_resize_operator(image.shape[1], out_w))
        )
        return np.round(apply_separable(image, box_resize_operator(image.shape[0], out_h), np.eye(out_w)))

    return resize(resize(pixels, small_h, small_w), height, width) / 255


NUMPY_CORRUPTIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
}


def corrupt_numpy(image, name, severity, rng):
    """One corruption of a uint8 [H, W, 3] image, as the reference saves it: uint8 (truncated).

    jpeg_compression is not here: it runs in TensorFlow (`corrupt`).
    """
    x = np.asarray(image, dtype=np.float64) / 255.0
    out = NUMPY_CORRUPTIONS[name](x, parameter(name, severity), rng)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def check(names, severities):
    """Raises ValueError naming what is wrong with corruption `names` or `severities`."""
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"unknown corruption {', '.join(unknown)}; choose from all, {', '.join(CORRUPTIONS)}"
        )
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f"severity {', '.join(map(str, bad))} is not one of 1, 2, 3, 4, 5")
    if not names or not severities:
        raise ValueError("name at least one corruption and one severity")


def corrupt(image, name, severity, index, seed=DEFAULT_SEED):
    """The corruption of one uint8 [H, W, 3] image tensor (graph or eager): a uint8 tensor.

    `index` (an int64 scalar tensor: the image's place in the evaluation order) and `seed`
    pick its draws (`image_rng`).
    """
    check([name], [severity])
    image = tf.convert_to_tensor(image, tf.uint8)
    if name == "jpeg_compression":
        encoded = tf.io.encode_jpeg(image, quality=parameter(name, severity))
        out = tf.io.decode_jpeg(encoded, channels=3)
    else:

        def numpy_corrupt(pixels, position):
            return corrupt_numpy(pixels, name, severity, image_rng(seed, name, severity, position))

        out = tf.numpy_function(numpy_corrupt, [image, tf.cast(index, tf.int64)], tf.uint8, stateful=False)
    out = tf.reshape(out, tf.shape(image))
    out.set_shape(image.shape)
    return out


def benchmark_crop(image, name, severity, index, seed=DEFAULT_SEED):
    """`corrupt`, then the JPEG (quality 85) round trip ImageNet-C's saved images went through."""
    out = corrupt(image, name, severity, index, seed)
    encoded = tf.io.encode_jpeg(out, quality=SAVED_JPEG_QUALITY)
    decoded = tf.io.decode_jpeg(encoded, channels=3)
    decoded.set_shape(out.shape)
    return decoded


# ----------------------------------------------------------------------------- scoring


def corruption_scores(errors, clean_error, normalise):
    """CE per corruption, mCE, relative CE and relative mCE from top-1 errors.

    Args:
      errors: {corruption: {severity: top-1 error in [0, 1]}}.
      clean_error: the clean (uncorrupted) top-1 error.
      normalise: divide by AlexNet's published errors (ImageNet data); else the CEs are the
        plain mean errors over the severities and the relative CEs the mean increase over the
        clean error (no AlexNet term).

    Returns:
      {"ce": {name: value}, "relative_ce": {name: value}, "mce": value, "relative_mce": value,
      "normalised": bool}; values as fractions (100 * value is the paper's figure).
    """
    ce, relative = {}, {}
    for name, by_severity in errors.items():
        mean = float(np.mean(list(by_severity.values())))
        if normalise:
            ce[name] = mean / ALEXNET_ERRORS[name]
            relative[name] = (mean - clean_error) / (ALEXNET_ERRORS[name] - ALEXNET_CLEAN_ERROR)
        else:
            ce[name] = mean
            relative[name] = mean - clean_error
    return {
        "ce": ce,
        "relative_ce": relative,
        "mce": float(np.mean(list(ce.values()))) if ce else None,
        "relative_mce": float(np.mean(list(relative.values()))) if relative else None,
        "normalised": bool(normalise),
    }
