"""Builds a folder that runs `alexnet_tf.benchmark.keras_backend` on a node with JAX and nothing else.

    python tools/build_backend_bundle.py --output=BUNDLE_DIR [--python_version=3.12]  # ~5 s, 35 MiB
    python tools/build_backend_bundle.py --output=BUNDLE_DIR --dry_run   # the plan; downloads nothing

Many GPU nodes have JAX on a CUDA that no TensorFlow wheel matches, and no network. Keras runs
on JAX, and so does this package's model, so this fills BUNDLE_DIR (which must not exist or be
empty) with `pip install --target` of Keras and the dependencies such a node lacks, as wheels
for --python_version on manylinux x86_64 (`--no-deps`: the list below is the closure,
without what JAX itself brings), a copy of this checkout's `alexnet_tf` package and
tools/gpu_benchmark.sh. Copy the folder to the node and run
`BUNDLE_DIR/gpu_benchmark.sh BUNDLE_DIR OUT.json` there. The versions are those installed
where this runs for Keras, and the newest at least as new as those installed for the rest. It prints every
package with its size, writes BUNDLE_DIR/BUNDLE.json (what is in it, for which Python), and
fails when the whole exceeds --max_mib.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("output", None, "The folder to fill; must not exist or be empty.")
flags.DEFINE_string("python_version", "3.12", "The node's Python, MAJOR.MINOR: wheels are chosen for it.")
flags.DEFINE_string(
    "platform",
    # jaxlib 0.10's own wheels need glibc 2.27, so every node it runs on takes these.
    "manylinux_2_27_x86_64",
    "The node's wheel platform tag (pip also takes older manylinux tags for it).",
)
flags.DEFINE_integer("max_mib", 64, "Fail when the bundle is larger than this (MiB).")
flags.DEFINE_bool("dry_run", False, "Print the packages and the pip command; download nothing.")
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keras 3.15's requirements (absl-py, numpy, rich, namex, h5py, optree, ml-dtypes, packaging)
# and theirs, less numpy and ml-dtypes, which JAX requires and so every JAX install has.
# h5py is not needed to import Keras or to benchmark, but `model.save` needs it; optree is
# Keras' tree library wherever dm-tree is absent; rich (Keras' summaries and progress bars)
# brings markdown-it-py, mdurl and pygments; optree needs typing-extensions.
PACKAGES = (
    "keras",
    "absl-py",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "namex",
    "h5py",
    "optree",
    "typing-extensions",
    "packaging",
)


class BundleError(Exception):
    """A flag value or a state of BUNDLE_DIR this cannot build with; the message names it."""


def requirements():
    """Keras at the version installed here, the others at least at theirs (bare names where absent).

    Keras is the API this package is tested against; for the others the newest wheel is taken,
    as an installed version may have no wheel for the node's Python (h5py 3.14.0 has none for
    3.12 on this project's index).
    """
    pinned = []
    for name in PACKAGES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
            continue
        pinned.append(f"{name}{'==' if name == 'keras' else '>='}{version}")
    return pinned


def pip_command(target, python_version, platform_tag, pins):
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        target,
        "--no-deps",
        # No .pyc files: they are for this Python, not the node's, and would double the size.
        "--no-compile",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--platform",
        platform_tag,
        "--disable-pip-version-check",
        *pins,
    ]


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _copy_package(output):
    """Copies this checkout's alexnet_tf package (sources only) into `output`."""
    shutil.copytree(
        os.path.join(REPO, "alexnet_tf"),
        os.path.join(output, "alexnet_tf"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    script = os.path.join(output, "gpu_benchmark.sh")
    shutil.copy2(os.path.join(REPO, "tools", "gpu_benchmark.sh"), script)
    os.chmod(script, 0o755)


def _git_commit():
    result = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = result.stdout.strip() or "unknown"
    return commit + ("+changes" if dirty.stdout.strip() else "")


def build(output, python_version, platform_tag, max_mib, dry_run):
    """Fills `output`; returns the manifest dict. Raises BundleError."""
    parts = python_version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise BundleError(f"--python_version={python_version} is not MAJOR.MINOR (e.g. 3.12)")
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise BundleError(f"--output={output} exists and is not an empty folder")
    pins = requirements()
    command = pip_command(output, python_version, platform_tag, pins)
    print(f"packages for CPython {python_version} on {platform_tag}: {' '.join(pins)}")
    print("pip command: " + " ".join(command))
    if dry_run:
        return None
    os.makedirs(output, exist_ok=True)
    result = subprocess.run(command, check=False)
    if result.returncode:
        raise BundleError(
            f"pip failed (status {result.returncode}) for --output={output}; its messages are above"
        )
    _copy_package(output)
    contents = {name: _size(os.path.join(output, name)) for name in sorted(os.listdir(output))}
    total = sum(contents.values())
    manifest = {
        "python_version": python_version,
        "platform": platform_tag,
        "requirements": pins,
        # What pip chose: "name-version.dist-info" folders.
        "installed": sorted(n[: -len(".dist-info")] for n in contents if n.endswith(".dist-info")),
        "alexnet_tf_commit": _git_commit(),
        "contents_bytes": contents,
        "total_bytes": total,
    }
    with open(os.path.join(output, "BUNDLE.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    for name, size in contents.items():
        print(f"{size / 2**20:8.2f} MiB  {name}")
    print(f"{total / 2**20:8.2f} MiB  in all (limit {max_mib} MiB): {output}")
    if total > max_mib * 2**20:
        raise BundleError(f"--output={output} holds {total / 2**20:.1f} MiB, over --max_mib={max_mib}")
    return manifest


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.output:
        print("build_backend_bundle: error: --output is required", file=sys.stderr)
        return 2
    try:
        build(FLAGS.output, FLAGS.python_version, FLAGS.platform, FLAGS.max_mib, FLAGS.dry_run)
    except BundleError as e:
        print(f"build_backend_bundle: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
