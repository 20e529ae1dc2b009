"""Tests of alexnet_tf.client: TF Serving's REST and gRPC request formats, against local stand-in servers.

TF Serving cannot be installed here, so two small servers on 127.0.0.1 play its part, backed
by the exported SavedModel: an http.server speaking the REST predict API (row format, "b64"
binary values, one object of named outputs per row, {"error": ...} with HTTP 400) and a grpcio
server implementing tensorflow_serving's PredictionService from its generated stubs.
"""

import base64
import concurrent.futures
import http.server
import json
import os
import socket
import subprocess
import sys
import threading

from conftest import REPO
import numpy as np
import pytest
import tensorflow as tf
from tiny_dataset import write_jpeg
from tiny_models import LABELS, small_classifier

from alexnet_tf import client
from alexnet_tf.serving.saved_model import export_saved_model

MODEL_NAME = "alexnet"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    base = str(tmp_path_factory.mktemp(MODEL_NAME))
    path = export_saved_model(small_classifier(), base, labels=LABELS, warmup=False)
    return tf.saved_model.load(path)


@pytest.fixture()
def files(tmp_path):
    paths = [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    images = [write_jpeg(paths[0], 240, 320, seed=1), write_jpeg(paths[1], 300, 200, seed=2)]
    return paths, images


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- request formats


def test_rest_body_is_tf_serving_row_format_with_b64(files):
    _, images = files
    body = json.loads(json.dumps(client.rest_request_body(images, "serving_default")))
    assert set(body) == {"signature_name", "instances"} and body["signature_name"] == "serving_default"
    assert [set(instance) for instance in body["instances"]] == [{"b64"}, {"b64"}]
    assert [base64.b64decode(i["b64"], validate=True) for i in body["instances"]] == images
    assert client.rest_url("host:8501", "alexnet") == "http://host:8501/v1/models/alexnet:predict"
    assert (
        client.rest_url("host:8501", "alexnet", 3) == "http://host:8501/v1/models/alexnet/versions/3:predict"
    )


def test_grpc_request_is_a_predict_request_with_a_string_tensor(files):
    from tensorflow_serving.apis import predict_pb2

    _, images = files
    request = predict_pb2.PredictRequest.FromString(
        client.grpc_request(images, "alexnet", 2, "serving_default").SerializeToString()
    )
    assert (request.model_spec.name, request.model_spec.signature_name) == ("alexnet", "serving_default")
    assert request.model_spec.version.value == 2
    assert list(request.inputs) == ["image_bytes"]
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert tf.make_ndarray(tensor).tolist() == images


# ----------------------------------------------------------------------------- stand-in servers


def rest_handler(loaded):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  http.server's name for the handler
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != f"/v1/models/{MODEL_NAME}:predict":
                return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
            signature = loaded.signatures[body.get("signature_name", "serving_default")]
            ((name, _),) = signature.structured_input_signature[1].items()
            # Row format: with one named input an instance is the value itself; {"b64": ...} is binary.
            values = [i[name] if isinstance(i, dict) and name in i else i for i in body["instances"]]
            values = [base64.b64decode(v["b64"]) for v in values]
            try:
                outputs = {k: v.numpy() for k, v in signature(**{name: tf.constant(values)}).items()}
            except tf.errors.InvalidArgumentError as e:
                return self.reply(400, {"error": e.message})
            rows = [
                {k: (v[i].astype(str) if v.dtype == object else v[i]).tolist() for k, v in outputs.items()}
                for i in range(len(values))
            ]
            return self.reply(200, {"predictions": rows})

        def reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


@pytest.fixture()
def rest_server(loaded):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), rest_handler(loaded))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture()
def grpc_server(loaded):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802  the gRPC service's method name
            if request.model_spec.name != MODEL_NAME:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Latest({request.model_spec.name})",
                )
            signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                outputs = signature(**inputs)
            except tf.errors.InvalidArgumentError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None).wait(timeout=10)


def expected_lines(loaded, paths, images):
    outputs = {
        k: v.numpy() for k, v in loaded.signatures["serving_default"](image_bytes=tf.constant(images)).items()
    }
    return [client.format_result(p, client.top_k(outputs, i)) for i, p in enumerate(paths)]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_end_to_end_prints_what_the_model_says(
    protocol, rest_server, grpc_server, loaded, files, tmp_path, capsys
):
    paths, images = files
    server = rest_server if protocol == "rest" else grpc_server
    missing = str(tmp_path / "missing.jpg")
    failures = client.run(server, [paths[0], missing, paths[1]], protocol=protocol, timeout=30)
    out, err = capsys.readouterr()
    assert failures == 1
    assert err.splitlines() == [f"alexnet_tf.client: {missing}: No such file or directory"]
    got, want = out.strip().split("\n"), "\n".join(expected_lines(loaded, paths, images)).split("\n")
    assert [line.split()[-2:] for line in got] == [line.split()[-2:] for line in want]  # labels and classes
    np.testing.assert_allclose(
        [float(line.split()[0]) for line in got[1:6]],
        [float(line.split()[0]) for line in want[1:6]],
        atol=1e-4,
    )


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_server_errors_give_one_line(protocol, rest_server, grpc_server, files, tmp_path, capsys):
    paths, _ = files
    server = rest_server if protocol == "rest" else grpc_server
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    assert client.run(server, [str(bad)], protocol=protocol, timeout=30) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"alexnet_tf.client: {bad}: server error")  # names the file
    assert "image_bytes[0] is not a JPEG, PNG, GIF or BMP image" in err[0]
    assert client.run(server, paths, protocol=protocol, model_name="resnet", timeout=30) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Servable not found" in err[0]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_server_that_is_not_there(protocol, files, capsys):
    paths, _ = files
    server = f"127.0.0.1:{free_port()}"
    assert client.run(server, paths, protocol=protocol, timeout=5) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [err.strip()] and err.startswith(
        f"alexnet_tf.client: {server} ({protocol}): cannot reach TF Serving"
    )


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_one_bad_file_among_good_ones_is_named_and_the_others_predicted(
    protocol, rest_server, grpc_server, loaded, files, tmp_path, capsys
):
    """One bad image fails TF Serving's whole request: the client resends file by file."""
    paths, images = files
    server = rest_server if protocol == "rest" else grpc_server
    broken = str(tmp_path / "broken.jpg")
    with open(broken, "wb") as f:
        f.write(images[0][: len(images[0]) // 2])  # valid magic bytes, cut short
    assert client.run(server, [paths[0], broken, paths[1]], protocol=protocol, timeout=30) == 1
    out, err = capsys.readouterr()
    got, want = out.strip().split("\n"), "\n".join(expected_lines(loaded, paths, images)).split("\n")
    assert [line.split()[-2:] for line in got] == [
        line.split()[-2:] for line in want
    ]  # both files, labels and classes
    assert len(err.splitlines()) == 1 and err.startswith(f"alexnet_tf.client: {broken}: server error")
    assert "truncated JPEG" in err


@pytest.mark.slow
def test_command_line_reports_each_file_and_exits_nonzero(rest_server, files, tmp_path):
    paths, images = files
    broken = str(tmp_path / "broken.jpg")
    with open(broken, "wb") as f:
        f.write(images[1][:300])

    result = subprocess.run(
        [sys.executable, "-m", "alexnet_tf.client", f"--server={rest_server}", paths[0], broken, paths[1]],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == paths
    errors = [line for line in result.stderr.splitlines() if line.startswith("alexnet_tf.client:")]
    assert (
        len(errors) == 1
        and errors[0].startswith(f"alexnet_tf.client: {broken}: ")
        and "Traceback" not in result.stderr
    )
