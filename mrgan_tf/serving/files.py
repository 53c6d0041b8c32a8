"""TF Serving's deployment files: warmup requests per version; model config and batching at the root.

* ``<version>/assets.extra/tf_serving_warmup_requests``: a TFRecord of
  ``PredictionLog`` protos, one ``PredictRequest`` per signature and batch size,
  which TF Serving replays after loading a version so that the first real
  requests do not pay the graph warm-up. Constant inputs are stored as
  one-value ("splat") TensorProtos, which TensorFlow expands to the full shape,
  so the file stays a few kilobytes.
* ``<export_dir>/models.config``: a text-format ``ModelServerConfig`` naming
  every model in the export dir (``--model_config_file``).
* ``<export_dir>/batching_parameters.txt``: text-format ``BatchingParameters``
  for slice batches (``--enable_batching --batching_parameters_file``).

The messages are built with tensorflow-serving-api's protos.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfrecords_tools.atomic import atomic_output, atomic_write_text

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000          # TF Serving reads at most this many
MODEL_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Server-side batching of slice requests (TF Serving's BatchingParameters).

    A slice costs ~0.3 s on a CPU core at 256 x 256, so waiting ``batch_timeout_micros``
    (2 ms) for other requests to join a batch is noise; allowed sizes are powers of
    two up to 32 (the client's default batch of 16 fits; a tail of 5 pads to 8), and
    the warmup replays every allowed size so no padded shape is cold.
    """

    allowed_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 4

    def __post_init__(self):
        sizes = tuple(int(b) for b in self.allowed_batch_sizes)
        if not sizes or sizes[0] < 1 or list(sizes) != sorted(set(sizes)):
            raise ValueError(f"allowed_batch_sizes must be increasing positive integers, got {sizes}")
        if self.num_batch_threads < 1 or self.max_enqueued_batches < 1 or self.batch_timeout_micros < 0:
            raise ValueError(f"bad batching parameters: {self}")
        object.__setattr__(self, "allowed_batch_sizes", sizes)

    @property
    def max_batch_size(self) -> int:
        return self.allowed_batch_sizes[-1]   # TF Serving requires the last allowed size to equal it

    def to_text(self) -> str:
        """BatchingParameters in protobuf text format."""
        lines = [f"max_batch_size {{ value: {self.max_batch_size} }}",
                 f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}",
                 f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}",
                 f"num_batch_threads {{ value: {self.num_batch_threads} }}"]
        lines += [f"allowed_batch_sizes: {b}" for b in self.allowed_batch_sizes]
        lines.append("pad_variable_length_inputs: false")
        return "\n".join(lines) + "\n"


def serving_protos(module: str):
    """``tensorflow_serving.<module>``, or an ImportError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(f"tensorflow_serving.{module}")
    except ImportError as e:
        raise ImportError(f"{e}: TF Serving's protos are needed (warmup requests, models.config, the client): "
                          "pip install grpcio && pip install --no-deps 'tensorflow-serving-api==2.21.*'") from e


# --------------------------------------------------------------------------- warmup


def tensor_proto(array: np.ndarray):
    """A TensorProto of ``array``; a constant array becomes a one-value splat of its shape."""
    import tensorflow as tf

    array = np.asarray(array)
    flat = array.reshape(-1)
    if flat.size > 1 and np.all(flat == flat[0]):
        proto = tf.make_tensor_proto(flat[:1], dtype=tf.as_dtype(array.dtype))
        proto.tensor_shape.Clear()
        for d in array.shape:
            proto.tensor_shape.dim.add().size = int(d)
        return proto
    return tf.make_tensor_proto(array)


def predict_request(model_name: str, signature: str, inputs: dict[str, np.ndarray], version: int | None = None):
    """A PredictRequest for ``model_name``'s ``signature`` with numpy ``inputs``."""
    req = serving_protos("apis.predict_pb2").PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = int(version)
    for key, value in inputs.items():
        req.inputs[key].CopyFrom(tensor_proto(value))
    return req


def warmup_logs(model_name: str, example_inputs, batch_sizes) -> list:
    """PredictionLogs: each signature of ``example_inputs(n)`` at each batch size ``n`` (duplicates dropped)."""
    prediction_log_pb2 = serving_protos("apis.prediction_log_pb2")

    logs, seen = [], set()
    for n in batch_sizes:
        for signature, inputs in example_inputs(int(n)).items():
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict_request(model_name, signature, inputs)))
            key = log.SerializeToString(deterministic=True)
            if key not in seen:
                seen.add(key)
                logs.append(log)
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warmup requests; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    return logs


def write_warmup(version_dir: str, logs) -> str:
    """Write ``logs`` as ``<version_dir>/assets.extra/tf_serving_warmup_requests`` (atomically)."""
    import tensorflow as tf

    path = os.path.join(version_dir, WARMUP_DIR, WARMUP_FILE)
    with atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as w:
            for log in logs:
                w.write(log.SerializeToString())
    return path


def read_warmup(path: str) -> list:
    """The PredictionLogs of a warmup file."""
    import tensorflow as tf

    prediction_log_pb2 = serving_protos("apis.prediction_log_pb2")
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


# --------------------------------------------------------------------------- export root


def model_server_config(models: dict[str, str]):
    """ModelServerConfig serving ``models`` ({name: base path}), each at its latest version."""
    config = serving_protos("config.model_server_config_pb2").ModelServerConfig()
    for name, base_path in models.items():
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = base_path
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    return config


def write_root_files(export_dir: str, names, base_path: str | None = None,
                     batching: BatchingConfig = BatchingConfig()) -> dict[str, str]:
    """Write ``models.config`` (models ``names``) and ``batching_parameters.txt`` into ``export_dir``.

    Args:
        export_dir: the folder holding ``<name>/<version>/``.
        names: the served model names to list (ct2mr, mr2ct).
        base_path: the export dir as the server sees it (default: ``export_dir``, absolute);
            each model's base path is ``<base_path>/<name>``.
        batching: the batching parameters to write.
    """
    from google.protobuf import text_format

    root = (base_path or os.path.abspath(export_dir)).rstrip("/")
    config = model_server_config({n: f"{root}/{n}" for n in sorted(names)})
    paths = {MODEL_CONFIG: os.path.join(export_dir, MODEL_CONFIG),
             BATCHING_PARAMETERS: os.path.join(export_dir, BATCHING_PARAMETERS)}
    atomic_write_text(paths[MODEL_CONFIG], text_format.MessageToString(config))
    atomic_write_text(paths[BATCHING_PARAMETERS], batching.to_text())
    return paths
