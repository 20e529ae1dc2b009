"""torchvision's AlexNet state_dict (`torchvision.models.alexnet`), checked entry by entry and loaded.

    model = import_torchvision("alexnet.safetensors")  # -> variant "one_weird_trick"

The keys are those of `torchvision.models.alexnet` (`features.{0,3,6,8,10}`,
`classifier.{1,4,6}`, `.weight`/`.bias`; a `module.` prefix is dropped); any other entry is
refused. The model starts with an `input_conversion` layer (`TORCHVISION_INPUT`: RGB / 255, then
ImageNet mean/std). `safetensors` and `torch` are imported only when a file needs them.
"""

import os

import numpy as np

from alexnet_tf.data import preprocessing
from alexnet_tf.weights import pretrained
from alexnet_tf.weights.mapping import (
    DEFAULT_CLASSES,
    WeightImportError,
    build_target,
    check_file,
    check_shape,
    keras_values,
    require,
    source_shapes,
)

TORCHVISION_INPUT = {
    "input_mean": preprocessing.MEAN_RGB,
    "channel_order": "rgb",
    "scale": 1.0 / 255.0,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}

# torchvision.models.alexnet's module index of each layer.
TORCHVISION_LAYERS = (
    ("conv1", "features.0"),
    ("conv2", "features.3"),
    ("conv3", "features.6"),
    ("conv4", "features.8"),
    ("conv5", "features.10"),
    ("fc6", "classifier.1"),
    ("fc7", "classifier.4"),
    ("fc8", "classifier.6"),
)
TORCHVISION_IMAGE_SIZE = 224


def import_torchvision(path, input_conversion=None):
    """Loads a torchvision AlexNet `state_dict` into `build_alexnet(variant="one_weird_trick")`.

    Args:
        path: `.safetensors` or `.npz` (no PyTorch needed), or `.pth`/`.pt` (needs PyTorch),
            holding `torchvision.models.alexnet().state_dict()` or a dict with it under
            "state_dict" or "model".
        input_conversion: `InputConversion` arguments; None uses `TORCHVISION_INPUT`.

    Returns:
        A float32 Keras model from this project's input to fc8's logits.

    Raises:
        WeightImportError: a layer is missing, has the wrong shape, or the file holds
            entries torchvision's AlexNet does not have.
        ConfigError: a weight of the model got no value from the file
            (`pretrained.assign_weights`).
        ImportError: the package for the file type is missing.
    """
    state = read_state_dict(path)
    if all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    fc8 = state.get(TORCHVISION_LAYERS[-1][1] + ".weight")
    num_classes = fc8.shape[0] if fc8 is not None and fc8.ndim == 2 else DEFAULT_CLASSES
    size = (TORCHVISION_IMAGE_SIZE, TORCHVISION_IMAGE_SIZE)
    model = build_target("one_weird_trick", num_classes, size, input_conversion or TORCHVISION_INPUT, path)
    for name, prefix in TORCHVISION_LAYERS:
        weight_shape, bias_shape = source_shapes(model.get_layer(name))
        check_shape(f"{name}: {prefix}.weight", state.get(f"{prefix}.weight"), weight_shape)
        check_shape(f"{name}: {prefix}.bias", state.get(f"{prefix}.bias"), bias_shape)
    known = {f"{prefix}.{kind}" for _, prefix in TORCHVISION_LAYERS for kind in ("weight", "bias")}
    unknown = sorted(set(state) - known)
    if unknown:
        raise WeightImportError(
            f"{path}: entries {unknown[:5]} are not in torchvision's AlexNet (expected only {sorted(known)})"
        )
    values = {}
    for name, prefix in TORCHVISION_LAYERS:
        values.update(keras_values(model, name, state[f"{prefix}.weight"], state[f"{prefix}.bias"]))
    pretrained.assign_weights(model, values, where=path)
    return model


def read_state_dict(path):
    """{name: float32 array} from a `.safetensors`, `.npz` or PyTorch `.pth`/`.pt` file."""
    check_file(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".safetensors":
            safetensors_numpy = require("safetensors.numpy", "reading .safetensors files", "safetensors")
            state = safetensors_numpy.load_file(path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                state = {key: archive[key] for key in archive.files}
        elif suffix in (".pth", ".pt"):
            state = _read_torch(path)
        else:
            raise WeightImportError(
                f"{path}: unknown file type {suffix!r}; use .safetensors, .npz, .pth or .pt"
            )
    except (WeightImportError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001  each format's reader raises its own types for a damaged file
        raise WeightImportError(f"{path}: cannot read it as a {suffix} state_dict ({e})") from None
    for key, value in state.items():
        if not np.issubdtype(np.asarray(value).dtype, np.floating):
            raise WeightImportError(f"{path}: entry {key!r} is {np.asarray(value).dtype}, expected floats")
    return {key: np.asarray(value).astype(np.float32, copy=False) for key, value in state.items()}


def _read_torch(path):
    torch = require("torch", "reading .pth files (or convert the file to .safetensors/.npz)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightImportError(f"{path}: holds a {type(state).__name__}, expected a state_dict")
    return {key: value.detach().float().cpu().numpy() for key, value in state.items()}
