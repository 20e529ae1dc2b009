"""Owns the TF Serving client: the REST and gRPC predict requests for image files, and their replies.

    python -m alexnet_tf.client --server=localhost:8501 --protocol=rest image.jpg [more.jpg ...]
    python -m alexnet_tf.client --server=localhost:8500 --protocol=grpc image.jpg [more.jpg ...]

sends the readable files (up to --batch_size per request) to the `serving_default` signature
of model --model_name (REST: `POST /v1/models/<name>[/versions/<v>]:predict` with
`{"signature_name": ..., "instances": [{"b64": ...}, ...]}`; gRPC:
`PredictionService.Predict` with a `PredictRequest` whose `image_bytes` input is a DT_STRING
[N] tensor) and prints what `alexnet_tf.predict` prints. A request the server refuses for its
content (one bad image fails all of it) is sent again one file at a time: the good files get
their predictions and each bad one a line naming it. Unreadable files, unreachable servers
and server errors give one line each on stderr; the exit status is 1 if any file failed.
"""

import base64
import json
import sys
import urllib.error
import urllib.request

from absl import app, flags

from alexnet_tf import cli
from alexnet_tf.serving.results import format_result, top_k

FLAGS = flags.FLAGS
PROGRAM = "alexnet_tf.client"
INPUT_NAME = "image_bytes"


class ServingError(Exception):
    """The server could not be reached or answered with an error.

    `bad_request` is True when the server refused the request's content (HTTP 400,
    INVALID_ARGUMENT): then one bad image fails the whole request, and the files are worth
    sending one at a time to tell which.
    """

    def __init__(self, message, bad_request=False):
        super().__init__(message)
        self.bad_request = bad_request


def define_flags(flag_values=FLAGS):
    """Defines the flags on `flag_values` (only the entry point calls this: importing defines none)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("server", "localhost:8501", "TF Serving HOST:PORT (REST 8501, gRPC 8500).", **fv)
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "How to talk to the server.", **fv)
    flags.DEFINE_string("model_name", "alexnet", "The model's name on the server.", **fv)
    flags.DEFINE_integer("model_version", None, "Version to ask for; default: the server's choice.", **fv)
    flags.DEFINE_string("signature_name", "serving_default", "Image-bytes signature.", **fv)
    flags.DEFINE_float("timeout", 30.0, "Seconds to wait for the answer.", **fv)
    flags.DEFINE_bool("json", False, "Print one JSON object per file.", **fv)
    flags.DEFINE_integer(
        "batch_size",
        32,
        "Files per request (TF Serving exports of this package "
        "refuse more than their --max_batch, 64 by default).",
        **fv,
    )


# ----------------------------------------------------------------------------- REST


def rest_url(server, model_name, model_version=None):
    """TF Serving's REST predict URL."""
    version = f"/versions/{int(model_version)}" if model_version is not None else ""
    return f"http://{server}/v1/models/{model_name}{version}:predict"


def rest_request_body(images, signature_name="serving_default"):
    """The row-format JSON body: binary inputs go as {"b64": base64} objects (TF Serving's REST API)."""
    return {
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
    }


def rest_predict(
    server, images, model_name="alexnet", model_version=None, signature_name="serving_default", timeout=30.0
):
    """Sends the REST request; returns the `predictions` list (one dict of named outputs per image)."""
    body = json.dumps(rest_request_body(images, signature_name)).encode("utf-8")
    request = urllib.request.Request(
        rest_url(server, model_name, model_version),
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise ServingError(
            f"server error {e.code}: {cli.error_message(ValueError(detail))}", bad_request=e.code == 400
        ) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise ServingError(f"cannot reach TF Serving (REST): {reason}") from None
    except ValueError as e:
        raise ServingError(f"the server's answer is not JSON: {e}") from None
    if "error" in reply:
        raise ServingError(f"server error: {cli.error_message(ValueError(reply['error']))}")
    return reply["predictions"]


# ----------------------------------------------------------------------------- gRPC


def grpc_request(images, model_name="alexnet", model_version=None, signature_name="serving_default"):
    """The PredictRequest proto: `image_bytes` as a DT_STRING tensor of shape [N]."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if model_version is not None:
        request.model_spec.version.value = int(model_version)
    request.inputs[INPUT_NAME].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            string_val=list(images),
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(images))]
            ),
        )
    )
    return request


def grpc_predict(
    server, images, model_name="alexnet", model_version=None, signature_name="serving_default", timeout=30.0
):
    """Sends the gRPC request; returns one dict of named outputs (lists) per image, like REST."""
    import grpc
    from tensorflow.python.framework import tensor_util
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(images, model_name, model_version, signature_name)
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServingError(
                    f"cannot reach TF Serving (gRPC): {e.code().name}: "
                    f"{(e.details() or '').splitlines()[0] if e.details() else ''}"
                ) from None
            raise ServingError(
                f"server error {e.code().name}: {cli.error_message(ValueError(e.details()))}",
                bad_request=e.code() == grpc.StatusCode.INVALID_ARGUMENT,
            ) from None
    outputs = {name: tensor_util.MakeNdarray(proto) for name, proto in response.outputs.items()}
    return [{name: value[i].tolist() for name, value in outputs.items()} for i in range(len(images))]


# ----------------------------------------------------------------------------- command line


def run(
    server,
    files,
    protocol="rest",
    model_name="alexnet",
    model_version=None,
    signature_name="serving_default",
    timeout=30.0,
    as_json=False,
    out=None,
    err=None,
    batch_size=32,
):
    """Reads the files, sends them and prints the results; returns how many files failed.

    Files go in requests of up to `batch_size`. When the server refuses a request's content
    (one bad or oversized image fails all of it), its files are sent again one at a time, so
    that the good ones get their predictions and each bad one its own error line.
    """
    out, err = out or sys.stdout, err or sys.stderr
    names, images, failures = [], [], 0
    for name in files:
        try:
            with open(name, "rb") as f:
                images.append(f.read())
            names.append(name)
        except OSError as e:
            failures += 1
            print(cli.error_line(PROGRAM, name, e.strerror or e), file=err)
    predict = rest_predict if protocol == "rest" else grpc_predict

    def send(batch_names, batch_images):
        """Prints one request's results; returns the number of failed files, or None if the server failed."""
        try:
            predictions = predict(server, batch_images, model_name, model_version, signature_name, timeout)
        except ServingError as e:
            if not e.bad_request:
                print(cli.error_line(PROGRAM, f"{server} ({protocol})", e), file=err)
                return None
            if len(batch_images) == 1:
                print(cli.error_line(PROGRAM, batch_names[0], e), file=err)
                return 1
            return sum(send([n], [i]) or 0 for n, i in zip(batch_names, batch_images))
        for name, outputs in zip(batch_names, predictions):
            print(format_result(name, top_k({k: [v] for k, v in outputs.items()}), as_json), file=out)
        return 0

    batch_size = max(1, int(batch_size))
    for start in range(0, len(images), batch_size):
        failed = send(names[start : start + batch_size], images[start : start + batch_size])
        if failed is None:  # unreachable or failing server: one line, every file left counts
            return failures + len(images) - start
        failures += failed
    return failures


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("usage: python -m alexnet_tf.client --server=HOST:PORT image [image ...]")
    failures = run(
        FLAGS.server,
        argv[1:],
        FLAGS.protocol,
        FLAGS.model_name,
        FLAGS.model_version,
        FLAGS.signature_name,
        FLAGS.timeout,
        FLAGS.json,
        batch_size=FLAGS.batch_size,
    )
    return cli.ExitStatus.FAILED if failures else cli.ExitStatus.SUCCESS


if __name__ == "__main__":
    define_flags()
    cli.run(main, PROGRAM)
