"""AlexNet as a Keras application: `AlexNet`, `preprocess_input` and `decode_predictions`.

In the conventions of `keras.applications.VGG16`:

    import alexnet_tf
    model = alexnet_tf.AlexNet(weights="models/bvlc_alexnet.keras")       # from alexnet_tf.import_weights
    x = alexnet_tf.preprocess_input(images, image_size=224)               # uint8 photos, any size
    print(alexnet_tf.decode_predictions(keras.ops.softmax(model(x)), labels="models/bvlc_alexnet.labels.txt"))

    trunk = alexnet_tf.AlexNet(include_top=False, pooling="avg", weights="/runs/alexnet")
    fc7 = keras.Model(model.input, model.get_layer("fc7").output)         # DeCAF-style features

`include_top=False` returns the convolutional trunk as Keras' applications do: pool5's maps
(N, 6, 6, 256 at 224 x 224), or one 256-vector per image with `pooling="avg"|"max"`. It is not
the fc7 features: those need fc6 and fc7, whose weights fix the input size, so they are a layer
of the whole model (the `keras.Model(model.input, model.get_layer("fc7").output)` line
above), the same line for any layer (fc6, conv5, ...); the trunk takes any input size the
variant allows.

`weights` is None (the variant's initialisation) or a path: a `.keras` file (an import by
python -m alexnet_tf.import_weights, or any `model.save` of a model `build_alexnet` made) or a training
checkpoint or model dir of `alexnet_tf.train`. Nothing is downloaded. The variant, the class
count, the input size and the input convention default to the weights' own; arguments that
contradict them raise ValueError. Weights are matched by layer name and shape
(`alexnet_tf.weights.pretrained`).

Every model takes what `preprocess_input` returns (RGB in [0, 255] minus the ImageNet mean,
float32): imported weights that expect other pixels (Caffe's BGR minus its mean pixel,
torchvision's [0, 1] RGB normalised by mean and std) carry an InputConversion layer that
converts them inside the model. `decode_predictions` reads probabilities as the serving
signature's `top_k_*` outputs do: `tf.math.top_k` order (ties to the lower class index) and
the labels file's lines as `schema.LabelEntry.text` ("synset name").
"""

import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.data import preprocessing, schema
from alexnet_tf.model import build_alexnet, normalize_input_conversion
from alexnet_tf.serving import results
from alexnet_tf.weights import pretrained
from alexnet_tf.weights.checkpointing import load_model

POOLINGS = (None, "avg", "max")


def AlexNet(  # noqa: N802  named like keras.applications.ResNet50
    include_top=True,
    weights=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation=None,
    variant=None,
    name=None,
    **kwargs,
):
    """Instantiates AlexNet, optionally with the weights of a saved model.

    Args:
        include_top: whether to include fc6, fc7 and fc8. False: the model ends at pool5.
        weights: None, or the path of a `.keras` file or of a training checkpoint or model dir
            whose weights to load ("imagenet" is refused: nothing is downloaded; import
            Caffe's or torchvision's weights with python -m alexnet_tf.import_weights).
        input_shape: (height, width, 3); default the weights' input shape, else (224, 224, 3).
            With include_top=False the height and width may be None where the variant allows.
        pooling: with include_top=False, None (pool5's 4-D maps), "avg" or "max" (global
            pooling to (N, 256)).
        classes: fc8's width; default the weights' classes, else 1000. With weights and
            include_top=True it must be theirs.
        classifier_activation: None (float32 logits, this project's convention) or an
            activation applied after fc8 in float32, e.g. "softmax" (layer `predictions`).
        variant: "paper", "one_weird_trick" or "caffe"; default the weights', else "paper".
        name: model name; default "alexnet_<variant>".
        **kwargs: further `build_alexnet` arguments (dropout_rate, weight_decay, hidden_bias,
            lrn_params, input_conversion, kernel_initializer, weight_init_stddev).

    Returns:
        A `keras.Model` with layers conv1..conv5 (and fc6, fc7, fc8 with the top).

    Raises:
        ValueError: bad or contradicting arguments, weights that cannot be loaded or that do
            not fit (naming the weight and both shapes).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"AlexNet: pooling must be None, 'avg' or 'max', got {pooling!r}.")
    if include_top and pooling is not None:
        raise ValueError(
            "AlexNet: pooling applies to include_top=False; with the top, fc6 takes pool5's maps."
        )
    if not include_top and classifier_activation is not None:
        raise ValueError("AlexNet: classifier_activation applies to include_top=True.")
    source = None
    if weights is not None:
        if weights == "imagenet":
            raise ValueError(
                "AlexNet: weights='imagenet' is not downloaded by this project; import Caffe's "
                "bvlc_alexnet or torchvision's weights with python -m alexnet_tf.import_weights and pass the "
                ".keras file it writes."
            )
        source, info = _load(weights)
        variant = _agree("variant", variant, info.variant, weights)
        kwargs["input_conversion"] = _agree(
            "input_conversion",
            normalize_input_conversion(kwargs.get("input_conversion")),
            info.input_conversion,
            weights,
        )
        if include_top:
            if info.num_classes is None:
                raise ValueError(f"AlexNet: weights={weights!r} have no fc6..fc8; use include_top=False.")
            classes = _agree("classes", classes, info.num_classes, weights)
        if input_shape is None:
            input_shape = info.input_shape
        kwargs.setdefault("kernel_initializer", "zeros")  # every weight is about to be overwritten
    model = build_alexnet(
        num_classes=1000 if classes is None else classes,
        variant=variant or "paper",
        input_shape=(224, 224, 3) if input_shape is None else input_shape,
        name=name,
        include_top=include_top,
        **kwargs,
    )
    if source is not None:
        pretrained.copy_weights(source, model, where=f"AlexNet: weights={weights!r}")
    if not include_top and pooling is not None:
        pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
        return keras.Model(model.input, pool(name=f"{pooling}_pool")(model.output), name=model.name)
    if include_top and classifier_activation is not None:
        probabilities = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")
        return keras.Model(model.input, probabilities(model.output), name=model.name)
    return model


def _load(weights):
    """(source model, pretrained.SourceInfo) of a weights path; ValueError if it is none."""
    try:
        source, _ = load_model(str(weights))
    except ValueError as e:  # ConfigError is one
        raise ValueError(f"AlexNet: weights={weights!r}: {e}") from None
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"AlexNet: weights={weights!r} cannot be loaded: {e}") from None
    info = pretrained.describe(source)
    if info.variant is None:
        raise ValueError(f"AlexNet: weights={weights!r} are not an AlexNet (no layers conv1..conv5).")
    return source, info


def _agree(argument, given, theirs, weights):
    """`theirs` when `given` is None or the same; ValueError otherwise."""
    if given is not None and given != theirs:
        raise ValueError(
            f"AlexNet: {argument}={given!r} but weights={weights!r} have {argument}={theirs!r}; "
            f"leave {argument} out to use theirs"
            + (" (or include_top=False to drop fc8)" if argument == "classes" else "")
            + "."
        )
    return theirs


def preprocess_input(images, image_size=None, resize_shorter=preprocessing.RESIZE_SHORTER):
    """Turns RGB pixels in [0, 255] into what every AlexNet here takes: float32, ImageNet mean subtracted.

    Args:
        images: uint8 or float RGB pixels in [0, 255], channels last: one image [H, W, 3], a
            batch [N, H, W, 3], or (with `image_size`) a list of images of any sizes. A NumPy
            array, list or tensor.
        image_size: None: the pixels are already the model's input size and only the mean is
            subtracted (`preprocessing.subtract_mean`). An int S: each image is first cropped
            as evaluation and the serving signatures crop it (`preprocessing.preprocess_for_eval`:
            the central square, resized to `resize_shorter`, its central S x S), so
            `model(preprocess_input(photos, image_size=224))` gives `serving_default`'s scores.
        resize_shorter: the square's side before the crop (the paper's 256).

    Returns:
        float32 [N, S, S, 3] (or [S, S, 3] for one image without `image_size`): a tensor for a
        tensor input, else a NumPy array.

    Raises:
        ValueError: `images` is not one image [H, W, 3] or a batch [N, H, W, 3] (or, with
            `image_size`, a list of [H, W, 3] images), naming the shape it has.
    """
    as_tensor = tf.is_tensor(images)
    if as_tensor:
        if images.shape.rank is not None:  # unknown inside some tf.functions: TensorFlow checks
            _check_images(images.shape, "images")
    elif image_size is None or isinstance(images, np.ndarray):
        _check_images(np.shape(images), "images")
    else:
        images = list(images)  # any iterable of images, each of its own size
        for i, image in enumerate(images):
            _check_images(np.shape(image), f"images[{i}]", ranks=(3,))
    if image_size is None:
        result = preprocessing.subtract_mean(images)
    elif as_tensor:
        size = int(image_size)
        result = tf.map_fn(
            lambda image: preprocessing.preprocess_for_eval(image, size, resize_shorter),
            images[tf.newaxis] if images.shape.rank == 3 else images,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
    else:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        result = tf.stack(
            [preprocessing.preprocess_for_eval(image, int(image_size), resize_shorter) for image in images]
        )
    return result if as_tensor else result.numpy()


def _check_images(shape, name, ranks=(3, 4)):
    """ValueError naming `name` and its shape unless it is [H, W, 3] or [N, H, W, 3] (of `ranks`)."""
    # Else TensorFlow broadcasts the mean over some shapes ([H, 3]) and fails deep inside on others.
    shape = tuple(shape)
    if len(shape) not in ranks or shape[-1] not in (3, None):
        expected = " or ".join({3: "one image [H, W, 3]", 4: "a batch [N, H, W, 3]"}[rank] for rank in ranks)
        raise ValueError(f"preprocess_input: {name} must be {expected} of RGB pixels, got shape {shape}.")


def decode_predictions(probabilities, top=5, labels=None):
    """The top classes of each row, as the serving signature's top_k outputs give them.

    Args:
        probabilities: [N, C] scores (a model's softmax; logits rank the same).
        top: how many classes per row (at most C).
        labels: None (class numbers "0".."C-1", what an export without labels serves), the
            path of a labels file (this project's `index<TAB>synset<TAB>name` labels.txt or one
            label per line, `schema.read_labels`), or C labels (strings or
            `schema.LabelEntry`s).

    Returns:
        For each row, a list of (label, score, class index) tuples, best first: the tuples
        `alexnet_tf.serving.top_k` reads from a signature's outputs.

    Raises:
        ValueError: `top` is not an int >= 1, `probabilities` is not [N, C], or there are not
            C labels.
    """
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise ValueError(f"decode_predictions: top must be an int >= 1, got {top!r}.")
    scores = tf.convert_to_tensor(probabilities, tf.float32)
    if scores.shape.rank != 2:
        raise ValueError(
            f"decode_predictions: expected scores of shape (N, classes), got {tuple(scores.shape)}."
        )
    num_classes = int(scores.shape[-1])
    if isinstance(labels, (str, os.PathLike)):
        labels = schema.read_labels(os.fspath(labels))
    texts = (
        [str(i) for i in range(num_classes)]
        if labels is None
        else [label.text if isinstance(label, schema.LabelEntry) else str(label) for label in labels]
    )
    if len(texts) != num_classes:
        raise ValueError(f"decode_predictions: {len(texts)} labels for {num_classes} classes.")
    best, classes = tf.math.top_k(scores, k=min(int(top), num_classes))
    outputs = {
        "top_k_labels": np.asarray(texts, dtype=object)[classes.numpy()],
        "top_k_scores": best.numpy(),
        "top_k_classes": classes.numpy(),
    }
    return [results.top_k(outputs, row) for row in range(int(scores.shape[0]))]
