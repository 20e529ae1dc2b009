"""Installs alexnet_tf: the 2012 AlexNet on Keras 3 with the TensorFlow backend.

TensorFlow itself comes from an extra so the same package serves CPU-only machines
(``pip install .[cpu]`` -> tensorflow-cpu) and GPU machines (``pip install .[gpu]`` ->
tensorflow[and-cuda]). See BUILD.md for every dependency decision.
"""

import pathlib
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

_HERE = pathlib.Path(__file__).parent
_VERSION = "0.1.0"

# Lower bounds are the versions this project is tested with (BUILD.md, "Dependencies").
_TF_VERSION = "2.21.0"


class CleanBuildPy(build_py):
    """Copies the package into a clean build/lib.

    setuptools reuses build/lib between builds and never deletes a file there, so a checkout that
    moved or removed modules would ship the old ones beside the new (an old `alexnet_tf/serving.py`
    next to the `alexnet_tf/serving/` package); a wheel holds exactly the tracked modules.
    """

    def run(self):
        shutil.rmtree(pathlib.Path(self.build_lib) / "alexnet_tf", ignore_errors=True)
        super().run()


setup(
    cmdclass={"build_py": CleanBuildPy},
    name="alexnet_tf",
    version=_VERSION,
    description="AlexNet (Krizhevsky et al., 2012), faithful to the paper, on Keras 3 / TensorFlow",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["alexnet_tf", "alexnet_tf.*"]),
    include_package_data=True,
    install_requires=[
        "keras>=3.15.0,<4",
        "tensorflow-datasets>=4.9.10",
        "absl-py>=2.1.0",
        "tensorboard>=2.21.0",
        "numpy>=1.26",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu>={_TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]>={_TF_VERSION}"],
        # Importing Caffe/ONNX-zoo and torchvision weights (python -m alexnet_tf.import_weights).
        "import": ["onnx>=1.17", "onnxruntime>=1.20", "safetensors>=0.4"],
        # TF Serving clients and warm-up records. tensorflow-serving-api itself declares a
        # dependency on the full `tensorflow` wheel, which would sit beside tensorflow-cpu:
        # install it with `pip install --no-deps tensorflow-serving-api` (BUILD.md).
        "serving": ["grpcio>=1.60", "protobuf>=4.21"],
        # The pictures of `python -m alexnet_tf.features` (nearest neighbours, top-5 bars).
        "figures": ["pillow>=10.0"],
        # ONNX export of the pixel signature and its onnxruntime check.
        "onnx": ["tf2onnx>=1.17.0", "onnx>=1.17", "onnxruntime>=1.20"],
        # Running .tflite files (python -m alexnet_tf.export --format=tflite writes them with
        # TensorFlow's own converter): the standalone LiteRT interpreter.
        "tflite": ["ai-edge-litert>=2.0"],
        "test": [
            "pytest>=8.0",
            # README's test command runs each pass on 2 processes, a test file each (-n 2 --dist loadfile).
            "pytest-xdist>=3.8.0",
            "ruff==0.17.6",  # pinned: a newer ruff may format differently (README's test command)
            "pillow>=10.0",
            "importlib_resources",
            "onnx>=1.17",
            "onnxruntime>=1.20",
            "safetensors>=0.4",
            "tf2onnx>=1.17.0",
            "grpcio>=1.60",
            "ai-edge-litert>=2.0",
            # tests/test_backends.py runs the model on Keras' JAX backend (CPU wheels).
            "jax>=0.10.2",
            "jaxlib>=0.10.2",
        ],
    },
    entry_points={
        "console_scripts": [
            "alexnet-info=alexnet_tf.info:run_main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: Apache Software License",
    ],
)
