"""Packaging for mrgan-tf.

TensorFlow is chosen at install time: the CPU wheel by default, or the CUDA build
with ``MRGAN_TF_GPU=1 pip install -e .[gpu]`` (the two wheels provide the same
module and must not be installed together).
"""
import os

from setuptools import find_packages, setup

GPU = os.environ.get("MRGAN_TF_GPU", "0") == "1"
TENSORFLOW = "tensorflow[and-cuda]==2.21.*" if GPU else "tensorflow-cpu==2.21.*"
# The TF Serving client protos. The wheel requires the name ``tensorflow``, which
# tensorflow-cpu does not provide, so with the CPU wheel install it apart with
# ``pip install --no-deps tensorflow-serving-api==2.21.*`` (``make venv`` does).
SERVING_API = "tensorflow-serving-api==2.21.*"

setup(
    name="mrgan-tf",
    version="0.1.0",
    description="MR-GAN: brain CT to synthetic MR from paired and unpaired data (TF2/Keras 3)",
    python_requires=">=3.11",
    packages=find_packages(include=["mrgan_tf", "mrgan_tf.*", "tfrecords_tools", "tfrecords_tools.*"]),
    install_requires=[
        TENSORFLOW,
        "keras>=3.10,<4",
        "numpy",
        "scipy",
        "nibabel>=5",
        "pydicom>=3",
        "pynetdicom>=3",
        "SimpleITK>=2.3",
        "absl-py",
        "tensorboard",
        "tqdm",
        "matplotlib",
        "scikit-image",
        "nilearn",
        "pillow",
        "grpcio>=1.60",
        "protobuf",
    ] + ([SERVING_API] if GPU else []),
    extras_require={
        "gpu": ["tensorflow[and-cuda]==2.21.*"],
        "test": ["pytest", "pytest-xdist"],
        # The PyTorch peer of bench/bench_peer.py only. Pinned: the machines' wheel store holds this
        # version's CPU build; elsewhere install it first from the CPU index (pip install
        # torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu), as PyPI's is a CUDA build.
        "bench": ["torch==2.13.0"],
    },
    entry_points={
        "console_scripts": [
            "mrgan-make-records=mrgan_tf.records.make_records:run",
            "mrgan-train=mrgan_tf.training.train:run",
            "mrgan-export=mrgan_tf.serving.export:run",
            "mrgan-synthesize=mrgan_tf.inference.synthesize:run",
            "mrgan-pacs=mrgan_tf.io.pacs:run",
            "mrgan-client=mrgan_tf.inference.client:run",
            "mrgan-evaluate=mrgan_tf.evaluation.evaluate:run",
            "mrgan-demo-data=mrgan_tf.demo.data:run",
            "mrgan-demo=mrgan_tf.demo.pipeline:run",
            "tfrecords-inspect=tfrecords_tools.inspect:run",
        ]
    },
)
