"""Tests of the importers in alexnet_tf.weights and `python -m alexnet_tf.import_weights`: imported
logits equal the source framework's on the same images, and files of the wrong structure fail
with the layer's name.

No file is downloaded: the ONNX graphs (bvlc_alexnet's structure, Caffe2's names) and the
torchvision-layout state_dicts are written here with random weights.
"""

import hashlib
import os
import subprocess
import sys

import keras
from keras_roundtrip import assert_layer_roundtrip
import numpy as np
import pytest

from alexnet_tf.data import preprocessing
from alexnet_tf.model import InputConversion, build_alexnet
from alexnet_tf.serving import model_card
from alexnet_tf.weights import importers, mapping, onnx_zoo
from alexnet_tf.weights.torchvision_state import TORCHVISION_INPUT, import_torchvision

CAFFE_MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])  # ilsvrc_2012_mean.npy
TORCH_MEAN, TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

# (name, out, in per group, kernel, stride, pad, groups) of Caffe's deploy.prototxt.
CAFFE_CONVS = (
    ("conv1", 96, 3, 11, 4, 0, 1),
    ("conv2", 256, 48, 5, 1, 2, 2),
    ("conv3", 384, 256, 3, 1, 1, 1),
    ("conv4", 384, 192, 3, 1, 1, 2),
    ("conv5", 256, 192, 3, 1, 1, 2),
)
# (state_dict prefix, out, in, kernel, stride, pad) of torchvision.models.alexnet.
TORCH_CONVS = (
    ("features.0", 64, 3, 11, 4, 2),
    ("features.3", 192, 64, 5, 1, 2),
    ("features.6", 384, 192, 3, 1, 1),
    ("features.8", 256, 384, 3, 1, 1),
    ("features.10", 256, 256, 3, 1, 1),
)
TORCH_FCS = (("classifier.1", 4096, 9216), ("classifier.4", 4096, 4096), ("classifier.6", 1000, 4096))


def _weight(rng, shape, fan_in, gain=2.0):
    """N(0, gain / fan_in) (He's init for gain 2: activations keep their scale), or zeros."""
    if rng is None:
        return np.zeros(shape, np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(gain / fan_in))


def _bias(rng, size, scale):
    return np.zeros(size, np.float32) if rng is None else rng.uniform(-scale, scale, size).astype(np.float32)


def _project_images(rng, n, size=224):
    """Images in the project's convention: RGB [0, 255] minus preprocessing.MEAN_RGB, NHWC."""
    return (rng.uniform(0, 255, (n, size, size, 3)) - np.array(preprocessing.MEAN_RGB)).astype(np.float32)


# ----------------------------------------------------------------------------- caffe variant


@pytest.mark.parametrize("size, pool1_input", [(224, 55), (227, 55)])
def test_caffe_variant_layout(size, pool1_input):
    """Caffe's bvlc_alexnet: no input padding, rounded-up pooling, LRN k=1 alpha 1e-4/5, bias 0.1."""
    model = build_alexnet(variant="caffe", input_shape=(size, size, 3), weight_decay=0.0)
    assert model.count_params() == 60_965_224
    shapes = {layer.name: tuple(layer.output.shape[1:3]) for layer in model.layers}
    assert shapes["conv1"] == ((size - 11) // 4 + 1,) * 2
    assert ("poolpad1" in shapes) == (size == 224)
    assert tuple(model.get_layer("pool1").input.shape[1:3]) == (pool1_input,) * 2
    assert shapes["pool1"] == (27, 27) and shapes["pool2"] == (13, 13) and shapes["pool5"] == (6, 6)
    lrn = model.get_layer("lrn2")
    assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 1.0, pytest.approx(2e-5), 0.75)
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_allclose(model.get_layer(name).bias.numpy(), 0.1)
    assert not any(isinstance(layer, InputConversion) for layer in model.layers)


# ----------------------------------------------------------------------------- ONNX graphs


def caffe_params(rng, fc_units=(4096, 4096, 1000)):
    """Caffe2-named initialisers of bvlc_alexnet (weights OIHW and (out, in)); zeros if rng is None.

    With inputs of +-128, conv1's outputs are ~100, where Caffe's LRN changes them by ~2x.
    """
    params = {}
    for name, out, cin, k, *_ in CAFFE_CONVS:
        params[f"{name}_w_0"] = _weight(rng, (out, cin, k, k), cin * k * k)
        params[f"{name}_b_0"] = _bias(rng, out, 1.0)
    fan_in = 9216
    for i, units in enumerate(fc_units, start=6):
        # fc8 scaled down so that logits are O(1) and a 1e-4 comparison means something.
        params[f"fc{i}_w_0"] = _weight(rng, (units, fan_in), fan_in, 2.0 if i < 8 else 4e-4)
        params[f"fc{i}_b_0"] = _bias(rng, units, 0.1)
        fan_in = units
    return params


def write_bvlc_alexnet_onnx(
    path,
    params,
    input_size=224,
    pool_pads=((0, 0, 1, 1), (0,) * 4, (0,) * 4),
    fc_form="gemm_transB",
    opset=9,
    skip=(),
    lrn_alpha=1e-4,
    extra_node=None,
):
    """Writes the ONNX model zoo's bvlc_alexnet structure (Caffe -> Caffe2 -> ONNX) with `params`.

    Node and tensor names follow the zoo graph: data_0, conv1_w_0, conv1_1, norm1_1, pool1_1,
    OC2_DUMMY_0 (the Reshape to [1, 9216]), fc6_1, ..., prob_1. pool1's bottom/right padding
    is how Caffe2's exporter writes Caffe's rounded-up pooling at 224x224.
    `fc_form`: "gemm_transB" (the zoo: weight [out, in], transB=1), "gemm" (weight [in, out])
    or "matmul_add". `skip`: layer names left out, the chain rewired around them.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], dict(params), "data_0"

    def add(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    pools = iter(pool_pads)
    for name, out, _cin, k, stride, pad, groups in CAFFE_CONVS:
        index = name[-1]
        if name not in skip:
            x = add(
                "Conv",
                [x, f"{name}_w_0", f"{name}_b_0"],
                f"{name}_1",
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
                dilations=[1, 1],
                group=groups,
            )
            x = add("Relu", [x], f"{name}_2")
            if extra_node == name:
                x = add("BatchNormalization", [x, "bn_s", "bn_b", "bn_m", "bn_v"], f"{name}_bn")
                inits.update({key: np.ones(out, np.float32) for key in ("bn_s", "bn_b", "bn_m", "bn_v")})
        if index in "12" and f"lrn{index}" not in skip:
            x = add("LRN", [x], f"norm{index}_1", size=5, alpha=lrn_alpha, beta=0.75, bias=1.0)
        if index in "125":
            x = add(
                "MaxPool", [x], f"pool{index}_1", kernel_shape=[3, 3], strides=[2, 2], pads=list(next(pools))
            )
    inits["OC2_DUMMY_1"] = np.array([1, 9216], np.int64)
    x = add("Reshape", [x, "OC2_DUMMY_1"], "OC2_DUMMY_0")
    for i in (6, 7, 8):
        name = f"fc{i}"
        if name in skip:
            continue
        w, b = f"{name}_w_0", f"{name}_b_0"
        if fc_form == "gemm_transB":
            x = add("Gemm", [x, w, b], f"{name}_1", transB=1)
        elif fc_form == "gemm":
            inits[w] = np.ascontiguousarray(inits[w].T)
            x = add("Gemm", [x, w, b], f"{name}_1")
        else:
            inits[w] = np.ascontiguousarray(inits[w].T)
            x = add("Add", [add("MatMul", [x, w], f"{name}_mm"), b], f"{name}_1")
        if i < 8:
            x = add("Relu", [x], f"{name}_2")
            # Dropout's ratio is an attribute before opset 12 and an input from it.
            x = add("Dropout", [x], f"{name}_3", **({"ratio": 0.5} if opset < 12 else {}))
    add("Softmax", [x], "prob_1")
    graph = helper.make_graph(
        nodes,
        "bvlc_alexnet",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, input_size, input_size])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, None])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2"
    )
    model.ir_version = 7
    onnx.save(model, str(path))
    return str(path)


def ort_logits(path, caffe_images):
    """fc8's output of the ONNX file in onnxruntime, the graph's Softmax left out."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    logits = [n for n in model.graph.node if n.op_type in ("Gemm", "Add")][-1].output[0]
    model.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([logits], {"data_0": image[None]})[0] for image in caffe_images])


def caffe_input(images):
    """Project-convention NHWC -> Caffe's NCHW input: BGR, [0, 255], minus the mean pixel."""
    bgr = (images.astype(np.float64) + np.array(preprocessing.MEAN_RGB))[..., ::-1] - CAFFE_MEAN_BGR
    return bgr.transpose(0, 3, 1, 2).astype(np.float32)


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory):
    """(path, caffe params, project images, onnxruntime logits) of a zoo-structured graph."""
    params = caffe_params(np.random.default_rng(0))
    path = write_bvlc_alexnet_onnx(tmp_path_factory.mktemp("zoo") / "bvlcalexnet-9.onnx", params)
    images = _project_images(np.random.default_rng(1), 2)
    return path, params, images, ort_logits(path, caffe_input(images))


def test_onnx_import_matches_onnxruntime(zoo_onnx):
    path, params, images, expected = zoo_onnx

    model = onnx_zoo.import_onnx(path)

    assert model.count_params() == 60_965_224
    assert 1 < np.abs(expected).max() < 20  # logits of a size where 1e-4 means something
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, atol=1e-4, rtol=0)
    difference, scale = onnx_zoo.compare_with_onnxruntime(model, path)
    assert difference < 1e-4 and scale > 1
    # The layouts behind that agreement: HWIO conv kernels (grouped conv2 too) and fc6 rows
    # in channels-last (y, x, c) order where Caffe's are (c, y, x).
    np.testing.assert_array_equal(
        model.get_layer("conv2").kernel.numpy()[1, 3, 5, 200], params["conv2_w_0"][200, 5, 1, 3]
    )
    y, x, c = 2, 4, 100
    np.testing.assert_array_equal(
        model.get_layer("fc6").kernel.numpy()[(y * 6 + x) * 256 + c, 7],
        params["fc6_w_0"][7, (c * 6 + y) * 6 + x],
    )


def test_onnx_caffe_input_size_and_matmul_add(tmp_path):
    """Caffe's own 227x227 input (no pool padding needed), fc layers as MatMul + Add, opset 12."""
    params = caffe_params(np.random.default_rng(2), fc_units=(4096, 4096, 10))
    path = write_bvlc_alexnet_onnx(
        tmp_path / "model.onnx",
        params,
        input_size=227,
        pool_pads=((0, 0, 0, 0),) * 3,
        fc_form="matmul_add",
        opset=12,
    )
    images = _project_images(np.random.default_rng(3), 1, 227)
    expected = ort_logits(path, caffe_input(images))

    model = onnx_zoo.import_onnx(path)

    assert tuple(model.input_shape[1:]) == (227, 227, 3) and model.output_shape[-1] == 10
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, atol=1e-4, rtol=0)


def test_onnx_gemm_forms_read_the_same_weights(tmp_path):
    params = caffe_params(np.random.default_rng(4), fc_units=(8, 6, 4))
    read = {}
    for form in ("gemm_transB", "gemm", "matmul_add"):
        proto = onnx_load(write_bvlc_alexnet_onnx(tmp_path / f"{form}.onnx", params, fc_form=form))
        read[form] = [
            (layer.weight, layer.bias)
            for layer in onnx_zoo.read_onnx_layers(proto)[2]
            if layer.kind == "dense"
        ]
    for i, (weight, bias) in enumerate(read["gemm_transB"]):
        np.testing.assert_array_equal(weight, params[f"fc{i + 6}_w_0"])
        for form in ("gemm", "matmul_add"):
            np.testing.assert_array_equal(read[form][i][0], weight)
            np.testing.assert_array_equal(read[form][i][1], bias)


def onnx_load(path):
    return pytest.importorskip("onnx").load(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"skip": ("conv3",)},  # missing layer
            r"conv3 \(ONNX node 'conv4_1'\): weight 'conv4_w_0' has shape \(384, 192, 3, 3\), "
            r"expected \(384, 256, 3, 3\)",
        ),
        (
            {"skip": ("fc6", "fc7", "fc8")},
            r"fc6: missing; the graph ends after node 'OC2_DUMMY_0', expected a Gemm .*weight shape \(4096, 9216\)",  # noqa: E501  (the message, verbatim)
        ),
        ({"skip": ("lrn1",)}, r"lrn1: expected an LRN node, found MaxPool node 'pool1_1'"),
        (
            {"pool_pads": ((0, 0, 0, 0),) * 3},
            r"pool1 \(ONNX node 'pool1_1'\): pools \[54, 54\] to \[26, 26\].*gives \[27, 27\]",
        ),
        ({"lrn_alpha": 2e-5}, r"lrn1 \(ONNX node 'norm1_1'\): LRN alpha / size=4e-06, expected 2e-05"),
        ({"extra_node": "conv1"}, r"ONNX node 'conv1_bn' is a BatchNormalization"),
    ],
)
def test_onnx_wrong_structure_names_the_layer(tmp_path, kwargs, message):
    params = caffe_params(None, fc_units=(8, 8, 8))
    path = write_bvlc_alexnet_onnx(tmp_path / "bad.onnx", params, **kwargs)
    with pytest.raises(mapping.WeightImportError, match=message):
        onnx_zoo.import_onnx(path)


def test_onnx_wrong_shape_names_the_layer_and_expected_shape(tmp_path):
    params = caffe_params(None, fc_units=(8, 8, 8))
    params["conv2_w_0"] = np.zeros((256, 96, 5, 5), np.float32)  # no groups
    path = write_bvlc_alexnet_onnx(tmp_path / "bad.onnx", params)
    with pytest.raises(
        mapping.WeightImportError,
        match=r"conv2 \(ONNX node 'conv2_1'\): weight 'conv2_w_0' has shape "
        r"\(256, 96, 5, 5\), expected \(256, 48, 5, 5\)",
    ):
        onnx_zoo.import_onnx(path)


def test_onnx_other_architecture_is_refused(tmp_path):
    """torchvision's AlexNet exported to ONNX is not Caffe's: conv1 has 64 filters."""
    params = caffe_params(None, fc_units=(8, 8, 8))
    params["conv1_w_0"] = np.zeros((64, 3, 11, 11), np.float32)
    path = write_bvlc_alexnet_onnx(tmp_path / "other.onnx", params)
    with pytest.raises(mapping.WeightImportError, match=r"conv1 .*expected \(96, 3, 11, 11\)"):
        onnx_zoo.import_onnx(path)


# ----------------------------------------------------------------------------- torchvision


def torchvision_state(rng, num_classes=1000):
    """A torchvision AlexNet state_dict as NumPy arrays (PyTorch layouts); zeros if rng is None."""
    state = {}
    for prefix, out, cin, k, *_ in TORCH_CONVS:
        state[f"{prefix}.weight"] = _weight(rng, (out, cin, k, k), cin * k * k)
        state[f"{prefix}.bias"] = _bias(rng, out, 0.1)
    for prefix, out, fan_in in TORCH_FCS[:2] + ((TORCH_FCS[2][0], num_classes, 4096),):
        gain = 0.2 if prefix == "classifier.6" else 2.0  # logits O(1), see caffe_params
        state[f"{prefix}.weight"] = _weight(rng, (out, fan_in), fan_in, gain)
        state[f"{prefix}.bias"] = _bias(rng, out, 0.1)
    return state


def _conv_nchw(x, w, b, stride, pad):
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b[:, None, None]


def _max_pool_nchw(x):
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(4, 5))


def numpy_torchvision_forward(state, images):
    """torchvision's AlexNet.forward (eval mode) in NumPy float64 on NCHW inputs."""
    x = images.astype(np.float64)
    for i, (prefix, _, _, _, stride, pad) in enumerate(TORCH_CONVS):
        x = _conv_nchw(x, state[f"{prefix}.weight"].astype(np.float64), state[f"{prefix}.bias"], stride, pad)
        x = np.maximum(x, 0)
        if i in (0, 1, 4):
            x = _max_pool_nchw(x)
    assert x.shape[1:] == (256, 6, 6)  # AdaptiveAvgPool2d((6, 6)) is the identity at 224
    x = x.reshape(len(x), -1)  # torch.flatten: channels-first
    for i, (prefix, *_) in enumerate(TORCH_FCS):
        x = x @ state[f"{prefix}.weight"].T.astype(np.float64) + state[f"{prefix}.bias"]
        x = np.maximum(x, 0) if i < 2 else x
    return x


def torchvision_input(images):
    """Project-convention NHWC -> torchvision's NCHW input: RGB / 255, ImageNet mean/std."""
    rgb = (images.astype(np.float64) + np.array(preprocessing.MEAN_RGB)) / 255.0
    return ((rgb - TORCH_MEAN) / TORCH_STD).transpose(0, 3, 1, 2)


def save_state(path, state):
    path = str(path)
    if path.endswith(".npz"):
        np.savez(path, **state)
    else:
        pytest.importorskip("safetensors.numpy").save_file(state, path)
    return path


@pytest.fixture(scope="module")
def torch_state():
    return torchvision_state(np.random.default_rng(3), num_classes=10)


@pytest.fixture(scope="module")
def torch_reference(torch_state):
    images = _project_images(np.random.default_rng(4), 2)
    return images, numpy_torchvision_forward(torch_state, torchvision_input(images))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_torchvision_import_matches_numpy_forward(tmp_path, torch_state, torch_reference, suffix):
    pytest.importorskip("safetensors")
    path = save_state(tmp_path / f"alexnet{suffix}", torch_state)
    images, expected = torch_reference

    model = import_torchvision(path)

    assert model.count_params() == 61_100_840 - 4_097_000 + 4096 * 10 + 10
    actual = np.asarray(model(images, training=False))
    assert 0.5 < np.abs(expected).max() < 100
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_pth_import_matches_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class AlexNet(nn.Module):  # torchvision.models.AlexNet's module layout
        def __init__(self, num_classes=1000):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(),
                nn.Linear(9216, 4096),
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(4096, 4096),
                nn.ReLU(),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    net = AlexNet().eval()
    path = str(tmp_path / "alexnet.pth")
    torch.save(net.state_dict(), path)
    images = _project_images(np.random.default_rng(5), 2)
    with torch.no_grad():
        expected = net(torch.from_numpy(torchvision_input(images).astype(np.float32))).numpy()

    model = import_torchvision(path)

    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, atol=1e-4, rtol=0)


def _without(state, *prefixes):
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


@pytest.fixture(scope="module")
def zero_state():
    return torchvision_state(None)


def test_torchvision_missing_layer(tmp_path, zero_state):
    path = save_state(tmp_path / "bad.npz", _without(zero_state, "classifier.6."))
    with pytest.raises(
        mapping.WeightImportError,
        match=r"fc8: classifier\.6\.weight is missing; expected shape \(1000, 4096\)",
    ):
        import_torchvision(path)


def test_torchvision_wrong_shape(tmp_path, zero_state):
    state = _without(zero_state, "classifier.")
    state["features.3.weight"] = np.zeros((192, 64, 3, 3), np.float32)
    path = save_state(tmp_path / "bad.npz", state)
    with pytest.raises(
        mapping.WeightImportError,
        match=r"conv2: features\.3\.weight has shape \(192, 64, 3, 3\), "
        r"expected \(192, 64, 5, 5\)",
    ):
        import_torchvision(path)


def test_torchvision_other_architecture(tmp_path):
    """A VGG-style state_dict: conv1 is features.0 but 3x3 with 64 filters, and more of them."""
    state = {
        "features.0.weight": np.zeros((64, 3, 3, 3), np.float32),
        "features.0.bias": np.zeros(64, np.float32),
        "features.2.weight": np.zeros((64, 64, 3, 3), np.float32),
    }
    path = save_state(tmp_path / "vgg.npz", state)
    with pytest.raises(
        mapping.WeightImportError,
        match=r"conv1: features\.0\.weight has shape \(64, 3, 3, 3\), "
        r"expected \(64, 3, 11, 11\)",
    ):
        import_torchvision(path)


def test_torchvision_unexpected_entries(tmp_path, zero_state):
    state = dict(zero_state, **{"features.1.running_mean": np.zeros(64, np.float32)})
    path = save_state(tmp_path / "bn.npz", state)
    with pytest.raises(
        mapping.WeightImportError, match=r"entries \['features\.1\.running_mean'\] are not in"
    ):
        import_torchvision(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.npz", None, "no such file"),
        ("weights.bin", b"x", "unknown file type '.bin'"),
        ("broken.npz", b"not a zip", "cannot read it as a .npz state_dict"),
        ("broken.onnx", b"\xff\xff not onnx", "not a readable ONNX model"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    source = "onnx" if name.endswith(".onnx") else "torchvision"
    if source == "onnx":
        pytest.importorskip("onnx")
    with pytest.raises(mapping.WeightImportError, match=message):
        importers.import_weights(source, str(path))


# ----------------------------------------------------------------------------- labels, CLI


def test_labels_default_to_the_tfds_synsets(tmp_path):
    labels = importers.read_labels(None, 1000)
    assert len(labels) == 1000 and labels[0] == "n01440764" and labels == sorted(labels)
    assert importers.read_labels(None, 10) is None
    words = tmp_path / "synset_words.txt"
    words.write_text("".join(f"n{i:08d} class {i}, a name\n" for i in range(10)))
    assert importers.read_labels(str(words), 10)[3] == "n00000003 class 3, a name"
    with pytest.raises(mapping.WeightImportError, match="10 labels for a model with 1000 classes"):
        importers.read_labels(str(words), 1000)


def test_input_conversion_layer_round_trips(tmp_path):
    assert_layer_roundtrip(InputConversion, onnx_zoo.CAFFE_INPUT, (2, 5, 5, 3), tmp_path)
    images = _project_images(np.random.default_rng(6), 2, 5)
    layer = InputConversion(**TORCHVISION_INPUT)
    np.testing.assert_allclose(
        np.asarray(layer(images)), torchvision_input(images).transpose(0, 2, 3, 1), atol=1e-5
    )
    layer = InputConversion(**onnx_zoo.CAFFE_INPUT)
    np.testing.assert_allclose(
        np.asarray(layer(images)), caffe_input(images).transpose(0, 2, 3, 1), atol=1e-4
    )


def test_import_to_files_writes_keras_labels_and_export(tmp_path, zoo_onnx):
    """What `python -m alexnet_tf.import_weights` does: .keras, labels and an export, on the same logits."""
    import tensorflow as tf

    path, _, images, expected = zoo_onnx
    output = str(tmp_path / "out" / "bvlc_alexnet.keras")

    summary = importers.import_to_files("onnx", path, output, export_dir=str(tmp_path / "export"))

    assert summary["max_logit_difference"] < 1e-4
    loaded = keras.saving.load_model(output)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), expected, atol=1e-4, rtol=0)
    conversion = loaded.get_layer("input_conversion").get_config()
    assert conversion["channel_order"] == "bgr"
    np.testing.assert_allclose(conversion["mean"], CAFFE_MEAN_BGR)
    with open(summary["labels"], encoding="utf-8") as f:
        assert f.read().splitlines()[:2] == ["n01440764", "n01443537"]  # tfds' synsets, no --labels

    exported = tf.saved_model.load(summary["export"])
    np.testing.assert_allclose(exported.logits(tf.constant(images)).numpy(), expected, atol=1e-4, rtol=0)
    # serving_default still takes encoded images: same answer as the model on the eval crop.
    image = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    png = tf.io.encode_png(image)
    served = exported.signatures["serving_default"](image_bytes=tf.stack([png]))
    crop = preprocessing.preprocess_for_eval(preprocessing.decode_image(png))[None]
    probabilities = tf.nn.softmax(loaded(crop, training=False)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
    top_label = served["top_k_labels"].numpy()[0, 0].decode()
    assert top_label == importers.read_labels()[int(np.argmax(probabilities))]

    # The model card beside the .keras file and in the export: the licence caveat, the source, the checks.
    assert summary["model_card"] == str(tmp_path / "out" / "bvlc_alexnet.MODEL_CARD.md")
    for card_file in (summary["model_card"], os.path.join(summary["export"], "MODEL_CARD.md")):
        with open(card_file, encoding="utf-8") as f:
            card = f.read()
        assert model_card.LICENCE_NOTES["onnx"] in card, card_file
        assert f"- parameters: {loaded.count_params():,}" in card and "- variant: `caffe`" in card
        assert f"max |logit difference| {summary['max_logit_difference']:.3g}" in card
        assert "first layer (`input_conversion`) turns that into what its weights expect: BGR" in card
    record = model_card.read_import_record(output)
    assert (record["source"], record["input"]) == ("onnx", os.path.abspath(path))
    with open(path, "rb") as f:
        assert record["input_sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_cli_reports_a_bad_file_in_one_line(tmp_path):
    state = {"features.0.weight": np.zeros((96, 3, 11, 11), np.float32)}  # Caffe's conv1, torchvision's slot
    path = save_state(tmp_path / "paper.npz", state)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alexnet_tf.import_weights",
            "--source=torchvision",
            f"--input={path}",
            f"--output={tmp_path / 'x.keras'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "alexnet_tf.import_weights: error: conv1: features.0.weight has shape (96, 3, 11, 11), "
        "expected (64, 3, 11, 11)"
    ) in result.stderr.splitlines()
    assert not (tmp_path / "x.keras").exists()
