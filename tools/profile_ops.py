"""Where a training step's time goes: per-layer and per-op totals from a profiler trace.

    python -m alexnet_tf.train --data_source=synthetic --num_classes=1000 --model_dir=/tmp/prof \
        --train_steps=12 --profile_steps=8,10 --precision=mixed_bfloat16
    python tools/profile_ops.py /tmp/prof [--top=25]

Reads the newest `*.xplane.pb` under the directory (what `--profile_steps` and
`tf.profiler.experimental` write; TensorBoard's profile plugin shows the same trace, but it is
not a dependency) and sums the TensorFlow op events of the compute threads, per step: by layer
and direction (forward, backward, optimizer, XLA clusters such as the LRN kernels), then the
largest single ops. With two inter-op threads ops overlap, so the sums can exceed the wall time
of a step; their proportions are what to read.
"""

import argparse
import collections
import glob
import os
import re
import sys

# Executor bookkeeping and XLA runtime wrappers that contain the real op events.
_CONTAINERS = (
    "ExecutorState",
    "CpuExecutable",
    "BlockUntilReady",
    "ParallelFor",
    "ThunkExecutor",
    "ExecuteAsyncOnStream",
    "RunStep",
    "EagerExecute",
)
_OPTIMIZER = re.compile(r"(^|/)(momentum_sgd|sgd|SGD|loss_scale_optimizer)(_\d+)?/")
_LAYER = re.compile(r"(conv\d|lrn\d|pool\d|fc\d|dropout\d|flatten|input_conversion)")


def newest_trace(path):
    traces = sorted(glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not traces:
        sys.exit(
            f"tools/profile_ops.py: no *.xplane.pb under {path}; run the trainer with --profile_steps first."
        )
    return traces[-1]


def op_times(trace_path):
    """{op name: total milliseconds} over the compute threads of the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(trace_path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if not name.startswith(_CONTAINERS):
                    totals[name] += event.duration_ps / 1e9
    return totals


def group(name):
    """'conv2 backward', 'lrn1 forward', 'optimizer', 'XLA clusters' ... for an op name."""
    op = name.split(":")[0]
    if "/" not in op and ("fusion" in op or op.startswith(("loop_", "wrapped_", "reduce", "copy"))):
        return "XLA clusters (LRN, weight update, augmentation)"
    if _OPTIMIZER.search(op):
        return "optimizer (outside XLA)"
    layer = _LAYER.search(op)
    direction = "backward" if "gradient_tape" in op else "forward"
    if name.endswith(":Cast"):
        return f"casts ({direction})"
    return f"{layer.group(1)} {direction}" if layer else f"other {direction}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace_dir", help="model_dir or profiler log dir holding *.xplane.pb")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps the trace covers, to divide by (default 1: totals)"
    )
    parser.add_argument("--top", type=int, default=25, help="largest single ops to list")
    args = parser.parse_args()
    path = newest_trace(args.trace_dir)
    totals = op_times(path)
    steps = args.steps or 1
    grouped = collections.Counter()
    for name, ms in totals.items():
        grouped[group(name)] += ms / steps
    overall = sum(grouped.values())
    print(f"{path}: {overall:.0f} ms of op time per step (over {steps} step(s); threads summed)")
    print("| group | ms/step | share |\n|---|---:|---:|")
    for name, ms in grouped.most_common():
        print(f"| {name} | {ms:.1f} | {100 * ms / overall:.1f}% |")
    print("\n| largest ops | ms/step |\n|---|---:|")
    for name, ms in totals.most_common(args.top):
        print(f"| {name[:110]} | {ms / steps:.1f} |")


if __name__ == "__main__":
    main()
