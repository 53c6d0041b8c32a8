"""A test double of TF Serving's PredictionService (gRPC) and REST predict API, in process.

TF Serving itself cannot be installed on our machines (not in Debian; PyPI has
only the client protos), so the serving tests talk to this double instead. It
does what TF Serving does at the protocol level, with the same protos:

* reads a ``models.config`` (text ``ModelServerConfig``) and loads each model's
  latest numeric version with the TF1 SavedModel loader (the kind TF Serving
  uses), then replays the version's ``assets.extra/tf_serving_warmup_requests``;
* ``Predict``: looks the servable up (NOT_FOUND ``Servable not found for request:
  Latest(name)`` / ``Specific(name, v)``), the signature (FAILED_PRECONDITION
  ``Serving signature key "x" not found.``), checks the input names and dtypes
  against the signature's TensorInfos (INVALID_ARGUMENT), honours
  ``output_filter`` and feeds / fetches by TensorInfo names;
* REST ``POST /v1/models/<name>[/versions/<v>]:predict``: the JSON tensor rules of
  TF Serving's ``json_tensor.cc`` (row ``instances`` and columnar ``inputs``,
  including "every output shares dimension 0" for row responses).

Every server binds 127.0.0.1 only; nothing here waits without a bound.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from mrgan_tf.serving.files import WARMUP_DIR, WARMUP_FILE, read_warmup


class ServingError(Exception):
    """A failed call, with the gRPC status code TF Serving would answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class LoadedVersion:
    """One version of one model, loaded as TF Serving loads it (TF1 loader, tag "serve")."""

    def __init__(self, path: str):
        self.path = path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        self.signatures = self.meta_graph.signature_def

    def run(self, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
        """Check ``request`` as TF Serving's predict_util does and run it; {alias: numpy output}."""
        name = request.model_spec.signature_name or "serving_default"
        if name not in self.signatures:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        sig = self.signatures[name]
        sent, wanted = set(request.inputs), set(sig.inputs)
        if sent != wanted:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input size does not match signature: {len(sent)}!={len(wanted)} "
                               f"Sent extra: {sorted(sent - wanted)}. Missing but required: {sorted(wanted - sent)}.")
        feeds = {}
        for alias, proto in request.inputs.items():
            want = sig.inputs[alias].dtype
            if proto.dtype != want:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Expects arg '{alias}' to be {tf.as_dtype(want).name} but "
                                   f"{tf.as_dtype(proto.dtype).name} is provided")
            feeds[sig.inputs[alias].name] = tf.make_ndarray(proto)
        aliases = list(request.output_filter) or list(sig.outputs)
        for alias in aliases:
            if alias not in sig.outputs:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
        if len(set(aliases)) != len(aliases):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias in {aliases}")
        try:
            values = self.session.run([sig.outputs[a].name for a in aliases], feed_dict=feeds)
        except (tf.errors.OpError, ValueError) as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0]) from None
        return dict(zip(aliases, values))


class ModelRepository:
    """The models of a ``models.config``, each at its latest version; warmup replayed on load."""

    def __init__(self, config_path: str, replay_warmup: bool = True):
        config = text_format.Parse(open(config_path).read(), model_server_config_pb2.ModelServerConfig())
        self.versions: dict[str, dict[int, LoadedVersion]] = {}
        self.warmup_replayed: dict[str, int] = {}
        for entry in config.model_config_list.config:
            numbers = sorted(int(v) for v in os.listdir(entry.base_path) if v.isdigit())
            keep = numbers[-max(1, entry.model_version_policy.latest.num_versions):]
            self.versions[entry.name] = {v: LoadedVersion(os.path.join(entry.base_path, str(v))) for v in keep}
            for v, loaded in self.versions[entry.name].items():
                self.warmup_replayed[f"{entry.name}/{v}"] = self._replay_warmup(loaded) if replay_warmup else 0

    @staticmethod
    def _replay_warmup(loaded: LoadedVersion) -> int:
        path = os.path.join(loaded.path, WARMUP_DIR, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        logs = read_warmup(path)
        for log in logs:
            loaded.run(log.predict_log.request)
        return len(logs)

    def find(self, name: str, version: int | None) -> LoadedVersion:
        versions = self.versions.get(name, {})
        if version is None and versions:
            return versions[max(versions)]
        if version in versions:
            return versions[version]
        wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}")

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        version = request.model_spec.version.value if request.model_spec.HasField("version") else None
        loaded = self.find(request.model_spec.name, version)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for alias, value in loaded.run(request).items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository, calls: list):
        self.repository, self.calls = repository, calls
        self.gate = threading.Event()     # cleared by ``Servers.held``: answers wait until it is set again
        self.gate.set()

    def Predict(self, request, context):
        self.calls.append(request)
        self.gate.wait(timeout=60)
        try:
            return self.repository.predict(request)
        except ServingError as e:
            context.abort(e.code, str(e))


# --------------------------------------------------------------------------- REST JSON rules


class JsonRuleError(ValueError):
    """A JSON payload TF Serving's REST API would reject (HTTP 400)."""


def _dense_shape(value, where: str) -> list[int]:
    """Shape of a JSON value (scalars []), checking every list at a level has one size (dense)."""
    if not isinstance(value, list):
        return []
    if not value:
        return [0]
    inner = [_dense_shape(v, where) for v in value]
    if any(s != inner[0] for s in inner):
        raise JsonRuleError(f"{where}: lists of different sizes at one level (not a dense tensor)")
    return [len(value)] + inner[0]


def _json_leaf_ok(v, dtype: tf.DType) -> bool:
    if dtype in (tf.float32, tf.float64):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if dtype in (tf.int32, tf.int64):
        return isinstance(v, int) and not isinstance(v, bool)
    if dtype == tf.string:
        return isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"})
    return False


def json_tensor(value, dtype: tf.DType, where: str) -> np.ndarray:
    """A JSON value -> numpy tensor of ``dtype`` by TF Serving's rules (dense, one leaf type)."""
    shape = _dense_shape(value, where)
    leaves = np.asarray(value, dtype=object).reshape(-1) if shape else [value]
    for v in leaves:
        if not _json_leaf_ok(v, dtype):
            raise JsonRuleError(f"{where}: JSON value {v!r} is not of expected type {dtype.name}")
    if dtype == tf.string:
        return np.array([v.encode() if isinstance(v, str) else v["b64"] for v in leaves], object).reshape(shape)
    return np.array(list(leaves), dtype.as_numpy_dtype).reshape(shape)


def request_from_json(body: bytes, signatures, model: str) -> tuple[predict_pb2.PredictRequest, str]:
    """A REST predict body -> (PredictRequest, "row" | "columnar"), or JsonRuleError."""
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise JsonRuleError(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise JsonRuleError("JSON Value: Is not object")
    name = doc.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise JsonRuleError("'signature_name' key must be a string value.")
    if name not in signatures:
        raise JsonRuleError(f'Serving signature name: "{name}" not found in signature def')
    infos = signatures[name].inputs
    if not infos:
        raise JsonRuleError(f"Failed to get input map for signature: {name}")
    if ("instances" in doc) == ("inputs" in doc):
        raise JsonRuleError("expecting exactly one of 'inputs' or 'instances' keys")
    dtypes = {k: tf.as_dtype(v.dtype) for k, v in infos.items()}
    if "instances" in doc:
        tensors, fmt = _rows(doc["instances"], dtypes), "row"
    else:
        tensors, fmt = _columns(doc["inputs"], dtypes), "columnar"
    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = model, name
    for k, v in tensors.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v, dtype=dtypes[k]))
    return req, fmt


def _rows(instances, dtypes) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise JsonRuleError("'instances' must be a non-empty list")
    objects = isinstance(instances[0], dict) and set(instances[0]) != {"b64"}
    if not objects and len(dtypes) > 1:
        raise JsonRuleError("instances is a plain list, but expecting list of objects as multiple input "
                            "tensors required as per tensorinfo_map")
    items: dict[str, list] = {k: [] for k in dtypes}
    for i, inst in enumerate(instances):
        if objects:
            if not isinstance(inst, dict) or set(inst) != set(dtypes):
                raise JsonRuleError(f"element {i} of 'instances': keys must be equal to {','.join(sorted(dtypes))}")
            for k, v in inst.items():
                items[k].append(json_tensor(v, dtypes[k], f"instances[{i}].{k}"))
        else:
            (k,) = dtypes
            items[k].append(json_tensor(inst, dtypes[k], f"instances[{i}]"))
    for k, vs in items.items():
        if any(v.shape != vs[0].shape for v in vs):
            raise JsonRuleError(f"input '{k}': instances of different shapes {sorted({v.shape for v in vs})}")
    return {k: np.stack(vs) for k, vs in items.items()}


def _columns(inputs, dtypes) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or set(inputs) == {"b64"}:
        if len(dtypes) > 1:
            raise JsonRuleError("inputs is a plain value/list, but expecting an object as multiple input "
                                "tensors required as per tensorinfo_map")
        (k,) = dtypes
        return {k: json_tensor(inputs, dtypes[k], "inputs")}
    missing = sorted(set(dtypes) - set(inputs))
    if missing:
        raise JsonRuleError(f"Missing named input: {missing[0]} in 'inputs' object.")
    return {k: json_tensor(inputs[k], dtypes[k], f"inputs.{k}") for k in dtypes}


def _json_value(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def response_json(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """Outputs -> the REST response TF Serving writes (row: every output must share dimension 0)."""
    if fmt == "columnar":
        values = {k: _json_value(np.asarray(v)) for k, v in outputs.items()}
        return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    sizes = set()
    for k, v in outputs.items():
        if np.ndim(v) == 0:
            raise JsonRuleError(f"Tensor name: {k} has no shape information ")
        sizes.add(np.shape(v)[0])
    if len(sizes) > 1:
        raise JsonRuleError(f"Tensor name: outputs have inconsistent batch sizes {sorted(sizes)}")
    rows = []
    for i in range(sizes.pop()):
        row = {k: _json_value(np.asarray(v)[i:i + 1])[0] for k, v in outputs.items()}
        rows.append(row if len(row) > 1 else next(iter(row.values())))
    return {"predictions": rows}


def _rest_handler(repository: ModelRepository, calls: list):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # keep test output quiet
            pass

        def _reply(self, status: int, doc: dict):
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append((self.path, body))
            path = self.path
            if not (path.startswith("/v1/models/") and path.endswith(":predict")):
                return self._reply(404, {"error": f"Malformed request: POST {path}"})
            parts = path[len("/v1/models/"):-len(":predict")].split("/")
            model, version = parts[0], (int(parts[2]) if len(parts) == 3 and parts[1] == "versions" else None)
            try:
                loaded = repository.find(model, version)
                request, fmt = request_from_json(body, loaded.signatures, model)
                return self._reply(200, response_json(loaded.run(request), fmt))
            except ServingError as e:
                return self._reply(404 if e.code == grpc.StatusCode.NOT_FOUND else 400, {"error": str(e)})
            except JsonRuleError as e:
                return self._reply(400, {"error": str(e)})

    return Handler


# --------------------------------------------------------------------------- servers


class Servers:
    """A running double: ``grpc_target`` ("127.0.0.1:port"), ``rest_url``, the calls it answered."""

    def __init__(self, repository: ModelRepository, max_message_bytes: int):
        self.repository = repository
        self.grpc_calls: list = []
        self.rest_calls: list = []
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        self._service = _PredictionService(repository, self.grpc_calls)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self._service, self._grpc)
        self.grpc_target = f"127.0.0.1:{self._grpc.add_insecure_port('127.0.0.1:0')}"
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(repository, self.rest_calls))
        self.rest_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._http_thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                             daemon=True)

    def start(self):
        self._grpc.start()
        self._http_thread.start()
        return self

    @contextlib.contextmanager
    def held(self):
        """gRPC Predict answers nothing until the block ends: a client's deadline passes for certain."""
        self._service.gate.clear()
        try:
            yield self
        finally:
            self._service.gate.set()

    def stop(self):
        self._service.gate.set()
        self._grpc.stop(grace=None)
        self._http.shutdown()
        self._http.server_close()
        self._http_thread.join(timeout=5)


@contextlib.contextmanager
def serving(config_path: str, max_message_bytes: int = 256 << 20, replay_warmup: bool = True):
    """Serve the models of ``config_path`` on 127.0.0.1 (gRPC and REST) for the block."""
    servers = Servers(ModelRepository(config_path, replay_warmup), max_message_bytes).start()
    try:
        yield servers
    finally:
        servers.stop()
