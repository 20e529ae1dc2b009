"""What a built model costs: its layer table (output shapes, parameters, multiply-adds) and the
FLOPs of one training image.

`python -m alexnet_tf.info` prints the table; the benchmarks turn images/s into TFLOP/s with
`training_flops`. Nothing here imports TensorFlow: it reads a built Keras model on any backend.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int  # multiply-adds per image, forward pass


def layer_table(model):
    """Describes every layer of a built Keras model.

    Multiply-adds are counted for convolutions and dense layers (one per weight use per
    output element), which is where all but a fraction of a percent of the work is; pooling,
    LRN, ReLU and padding are listed with 0.

    Args:
        model: a built `keras.Model` (e.g. from `build_alexnet`).

    Returns:
        A list of `LayerInfo`, in model order, input layer excluded.
    """
    rows = []
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        out_shape = tuple(layer.output.shape[1:])
        macs = 0
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            kernel_shape = tuple(kernel.shape)
            per_output = 1
            for d in kernel_shape[:-1]:  # (kh, kw, cin/groups) for convs, (in,) for dense
                per_output *= d
            outputs = 1
            for d in out_shape:
                outputs *= d
            macs = per_output * outputs
        rows.append(
            LayerInfo(layer.name, layer.__class__.__name__, out_shape, int(layer.count_params()), int(macs))
        )
    return rows


def training_flops(rows):
    """FLOPs of one training image: forward, weight-gradient and input-gradient
    multiply-adds at 2 FLOP each; the first weighted layer needs no input gradient.

    Args:
        rows: list of `LayerInfo` from `layer_table`.

    Returns:
        FLOPs per image as an int (about 4.1e9 for the paper variant).
    """
    weighted = [r.macs for r in rows if r.macs]
    return 6 * sum(weighted) - 2 * (weighted[0] if weighted else 0)
