"""Whole-volume synthesis through a TF Serving server (gRPC or REST).

    python -m mrgan_tf.client --server=localhost:8500 --ct=ct.nii.gz --out=syn_mr.nii.gz
    python -m mrgan_tf.client --server=http://localhost:8501 --mr=mr.mha --out=syn_ct.nii.gz
    python -m mrgan_tf.synthesize --server=localhost:8500 --ct=ct.nii.gz --out=syn_mr.nii.gz

The client is a remote ``synthesize.Predictor``: it reads the model's
preprocessing from the server (``preprocessing_parameters``), so the volume is
read, reoriented, resampled and sliced by synthesize's own numpy code, and
``synthesize.write_synthesis`` restacks and writes the result exactly as a
local synthesis would. Only the generator runs on the server, through the
``normalised`` signature, in ordered batches small enough for the message
limit (gRPC's default receive limit is 4 MB; the channel here sets its own).

Errors (unreachable server, unknown model, signature or version, deadline
exceeded) raise ``ServingError`` with a message naming the server; UNAVAILABLE
is retried a bounded number of times with exponential backoff.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Callable

import numpy as np
from absl import app, flags

from mrgan_tf import cli, requirements
from mrgan_tf.inference.predictors import INPUT_MODALITY, Fusion, Predictor, SynthesisError
from mrgan_tf.inference.tta import TTAConfig, tta_from_flags
from mrgan_tf.preprocess import PreprocessConfig

INPUTS = {"ct2mr": ("ct", "mr"), "mr2ct": ("mr", "ct")}   # normalised signature: (input, output)
MESSAGE_HEADROOM = 0.9          # share of the message limit a batch may fill
JSON_BYTES_PER_VALUE = 16       # a float32 written as JSON text, with separators


class ServingError(SynthesisError):
    """The server could not answer; the message names the server and what to do."""


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """How to talk to the server.

    Args:
        server: ``host:port`` of the gRPC port, or ``http://host:port`` of the REST port.
        version: a model version to pin (default: the server's latest).
        timeout_s: deadline of each call.
        max_message_mb: message size limit of the channel (requests are batched below it).
        retries: how many times an UNAVAILABLE call is tried in all.
        backoff_s: the first wait between tries; it doubles each time.
    """

    server: str
    version: int | None = None
    timeout_s: float = 120.0
    max_message_mb: int = 64
    retries: int = 5
    backoff_s: float = 0.5

    def __post_init__(self):
        address = self.server.split("://", 1)[-1].rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ServingError(f"--server={self.server}: expected host:port (gRPC) or http://host:port (REST)")
        if not self.timeout_s > 0:
            raise ServingError(f"--timeout_s must be > 0, got {self.timeout_s}")
        for name in ("max_message_mb", "retries"):
            if getattr(self, name) < 1:
                raise ServingError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.version is not None and self.version < 1:
            raise ServingError(f"--model_version must be at least 1, got {self.version}")

    @property
    def rest(self) -> bool:
        return self.server.startswith(("http://", "https://"))

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb) << 20


def _with_retries(cfg: ClientConfig, call: Callable, unavailable: Callable[[Exception], bool],
                  sleep: Callable[[float], None] = time.sleep):
    """``call()``, retried while ``unavailable(error)``, at most ``cfg.retries`` tries in all."""
    tries = max(1, int(cfg.retries))
    for attempt in range(tries):
        try:
            return call()
        except Exception as e:   # noqa: BLE001 - re-raised unless it is a retryable UNAVAILABLE
            if not unavailable(e) or attempt == tries - 1:
                raise
            sleep(cfg.backoff_s * (2 ** attempt))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- transports


class GrpcTransport:
    """PredictionService over gRPC (tensorflow-serving-api's stub), message limits set on the channel."""

    def __init__(self, cfg: ClientConfig, sleep: Callable[[float], None] = time.sleep):
        import grpc

        from mrgan_tf.serving.files import serving_protos

        prediction_service_pb2_grpc = serving_protos("apis.prediction_service_pb2_grpc")

        self.cfg, self._sleep, self._grpc = cfg, sleep, grpc
        options = [("grpc.max_send_message_length", cfg.max_message_bytes),
                   ("grpc.max_receive_message_length", cfg.max_message_bytes)]
        self.channel = grpc.insecure_channel(cfg.server, options=options)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def bytes_per_value(self) -> int:
        return 4

    def predict(self, model: str, signature: str, inputs: dict[str, np.ndarray],
                output_filter: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        import tensorflow as tf

        from mrgan_tf.serving.files import predict_request

        request = predict_request(model, signature, inputs, self.cfg.version)
        request.output_filter.extend(output_filter)
        grpc = self._grpc
        try:
            response = _with_retries(self.cfg, lambda: self.stub.Predict(request, timeout=self.cfg.timeout_s),
                                     lambda e: isinstance(e, grpc.RpcError) and e.code() == grpc.StatusCode.UNAVAILABLE,
                                     self._sleep)
        except grpc.RpcError as e:
            raise ServingError(_grpc_message(self.cfg, model, signature, e.code(), e.details())) from None
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self):
        self.channel.close()


def _grpc_message(cfg: ClientConfig, model: str, signature: str, code, details: str) -> str:
    where = f"{cfg.server}: model {model!r}" + (f" version {cfg.version}" if cfg.version else "")
    name = getattr(code, "name", str(code))
    if name == "UNAVAILABLE":
        return (f"{cfg.server}: server unreachable (UNAVAILABLE after {cfg.retries} tries): {details}; "
                "is tensorflow_model_server running there, with this gRPC port?")
    if name == "NOT_FOUND":
        what = f"version {cfg.version} of model {model!r}" if cfg.version else f"model {model!r}"
        return f"{cfg.server}: {what} not found on the server ({details}); check models.config and the version"
    if name == "FAILED_PRECONDITION" and "signature" in details.lower():
        return f"{where} has no signature {signature!r} ({details}); was it exported by mrgan_tf.serving.export?"
    if name == "DEADLINE_EXCEEDED":
        return (f"{where}: no answer within {cfg.timeout_s:g} s (deadline exceeded) for {signature!r}; "
                "raise --timeout_s or lower --batch_size")
    if name == "RESOURCE_EXHAUSTED":
        return f"{where}: message too large for the server ({details}); lower --max_message_mb or --batch_size"
    return f"{where}, signature {signature!r}: {name}: {details}"


class RestTransport:
    """TF Serving's REST predict API, columnar JSON (``inputs`` / ``outputs``)."""

    def __init__(self, cfg: ClientConfig, sleep: Callable[[float], None] = time.sleep):
        self.cfg, self._sleep = cfg, sleep

    def bytes_per_value(self) -> int:
        return JSON_BYTES_PER_VALUE

    def url(self, model: str) -> str:
        version = f"/versions/{self.cfg.version}" if self.cfg.version else ""
        return f"{self.cfg.server.rstrip('/')}/v1/models/{model}{version}:predict"

    def predict(self, model: str, signature: str, inputs: dict[str, np.ndarray],
                output_filter: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        body = json.dumps(columnar_payload(signature, inputs)).encode()
        req = urllib.request.Request(self.url(model), body, {"Content-Type": "application/json"})

        def unavailable(e):
            return (isinstance(e, urllib.error.HTTPError) and e.code == 503) or (
                isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError)
                and isinstance(e.reason, ConnectionError))

        def call():
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as r:
                return json.load(r)

        try:
            doc = _with_retries(self.cfg, call, unavailable, self._sleep)
        except urllib.error.HTTPError as e:
            raise ServingError(_rest_message(self.cfg, model, signature, e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise ServingError(_grpc_message(self.cfg, model, signature, "DEADLINE_EXCEEDED", "")) from None
            raise ServingError(_grpc_message(self.cfg, model, signature, "UNAVAILABLE", str(e.reason))) from None
        except (socket.timeout, TimeoutError):
            raise ServingError(_grpc_message(self.cfg, model, signature, "DEADLINE_EXCEEDED", "")) from None
        outputs = doc["outputs"]
        if not isinstance(outputs, dict):   # one output: TF Serving writes the bare value
            outputs = {output_filter[0] if output_filter else "output": outputs}
        return {k: np.asarray(v) for k, v in outputs.items() if not output_filter or k in output_filter}

    def close(self):
        pass


def _rest_message(cfg: ClientConfig, model: str, signature: str, e) -> str:
    try:
        details = json.loads(e.read()).get("error", "")
    except ValueError:
        details = str(e)
    if e.code == 404:
        return _grpc_message(cfg, model, signature, "NOT_FOUND", details)
    if "signature" in details.lower() and "not found" in details.lower():
        return _grpc_message(cfg, model, signature, "FAILED_PRECONDITION", details)
    if e.code == 503:
        return _grpc_message(cfg, model, signature, "UNAVAILABLE", details)
    return f"{cfg.server}: model {model!r}, signature {signature!r}: HTTP {e.code}: {details}"


def columnar_payload(signature: str, inputs: dict[str, np.ndarray]) -> dict:
    """A REST columnar body: ``{"signature_name": ..., "inputs": {name: nested lists}}``."""
    return {"signature_name": signature, "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}


def row_payload(signature: str, inputs: dict[str, np.ndarray]) -> dict:
    """A REST row body: one ``instances`` entry per element of dimension 0 (objects when several inputs)."""
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    n = {len(a) for a in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"row format needs every input to share dimension 0, got {sorted(n)}")
    if len(arrays) == 1:
        return {"signature_name": signature, "instances": next(iter(arrays.values())).tolist()}
    return {"signature_name": signature,
            "instances": [{k: a[i].tolist() for k, a in arrays.items()} for i in range(n.pop())]}


def make_transport(cfg: ClientConfig, sleep: Callable[[float], None] = time.sleep):
    return RestTransport(cfg, sleep) if cfg.rest else GrpcTransport(cfg, sleep)


# --------------------------------------------------------------------------- remote predictor


@dataclasses.dataclass
class RemotePredictor(Predictor):
    """A ``Predictor`` whose generator runs on the server; batches are capped by the message limit."""

    max_batch: int = 16
    transport: object = None
    version: int | None = None

    def model_record(self) -> dict:
        """The served model as the sidecar names it (the server knows its files, the client does not)."""
        return {"path": self.source, "kind": "served", "direction": self.name,
                "version": self.version if self.version is not None else "latest",
                "training_iterations": None, "run_config": {}}

    def predict01(self, stack01: np.ndarray, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        # A 2.5D model's batches travel with 2k neighbours each side (Predictor.predict01): keep them under the cap.
        room = max(1, self.max_batch - 4 * self.preprocess.context_slices)
        return super().predict01(stack01, min(int(batch_size), room), progress)


def read_preprocess(transport, model: str) -> PreprocessConfig:
    """The model's PreprocessConfig as the server has it (gRPC: no-input signature; REST: its row twin)."""
    if isinstance(transport, RestTransport):
        out = transport.predict(model, "preprocessing_parameters_rows", {"row": np.zeros([1], np.int32)},
                                ("direction", "preprocess_json"))
        direction, text = str(out["direction"][0]), str(out["preprocess_json"][0])
    else:
        out = transport.predict(model, "preprocessing_parameters", {}, ("direction", "preprocess_json"))
        direction, text = out["direction"].item().decode(), out["preprocess_json"].item().decode()
    if direction != model:
        raise ServingError(f"{transport.cfg.server}: model {model!r} says it is {direction!r}; "
                           "check the names in models.config")
    return PreprocessConfig.from_dict(json.loads(text))


def max_batch_for(cfg: PreprocessConfig, transport, limit_bytes: int) -> int:
    """Slices per request that keep both request and response under ``limit_bytes``."""
    per_slice = cfg.image_size * cfg.image_size * transport.bytes_per_value()
    n = int(limit_bytes * MESSAGE_HEADROOM) // per_slice
    if n < 1:
        raise ServingError(f"{transport.cfg.server}: one {cfg.image_size} x {cfg.image_size} slice "
                           f"({per_slice} bytes) exceeds the message limit ({limit_bytes} bytes); "
                           "raise --max_message_mb")
    return n


def connect(cfg: ClientConfig, model: str = "ct2mr", transport=None) -> RemotePredictor:
    """A RemotePredictor for ``model`` (ct2mr | mr2ct) on ``cfg.server``.

    Args:
        cfg: server address, version, deadline, message limit and retries.
        model: the served model name.
        transport: a transport to use instead of one made from ``cfg`` (tests).
    """
    if model not in INPUTS:
        raise ServingError(f"unknown model {model!r}; expected one of {sorted(INPUTS)}")
    transport = transport or make_transport(cfg)
    preprocess = read_preprocess(transport, model)
    arg, out = INPUTS[model]

    def fn(x: np.ndarray) -> np.ndarray:
        return transport.predict(model, "normalised", {arg: np.asarray(x, np.float32)}, (out,))[out]

    return RemotePredictor(model, preprocess, f"{cfg.server}/{model}", fn,
                           max_batch=max_batch_for(preprocess, transport, cfg.max_message_bytes),
                           transport=transport, version=cfg.version)


# --------------------------------------------------------------------------- CLI


# Field -> flag: how to reach the server; the one set that ``client`` and ``synthesize --server`` share.
CONNECTION_FLAGS = {
    "server": cli.Flag("TF Serving address: host:port (gRPC) or http://host:port (REST)."),
    "version": cli.Flag("Pin a model version (default: the server's latest).", name="model_version"),
    "timeout_s": cli.Flag("Deadline of each request, seconds."),
    "max_message_mb": cli.Flag("Message size limit of the channel, MB (requests are batched below it)."),
    "retries": cli.Flag("Tries in all for a call the server answers UNAVAILABLE."),
}


def define_connection_flags(fv: flags.FlagValues) -> None:
    cli.define_field_flags(fv, ClientConfig, CONNECTION_FLAGS)


def connection_from_flags(fv: flags.FlagValues) -> ClientConfig:
    """The ClientConfig the connection flags describe (validated there)."""
    return ClientConfig(**cli.field_values(fv, CONNECTION_FLAGS, ClientConfig))


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """CLI flags, defined only when run as a program."""
    define_connection_flags(fv)
    flags.DEFINE_string("ct", None, "Input CT: NIfTI, .mha/.nrrd or a DICOM folder (ct2mr).", flag_values=fv)
    flags.DEFINE_string("mr", None, "Input MR (mr2ct).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output file, any format synthesize writes.", flag_values=fv)
    flags.DEFINE_string("model_name", None, "Served model name (default: ct2mr with --ct, mr2ct with --mr).",
                        flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Slices per request (capped by the message limit).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    from mrgan_tf.inference.outputs import define_ensemble_flags, define_safety_flags
    define_safety_flags(fv)
    define_ensemble_flags(fv)


def synthesize_remote(cfg: ClientConfig, src: str, out: str, model: str, batch_size: int = 16,
                      progress: bool = False, options=None, tta: TTAConfig = TTAConfig(),
                      fusion: str | None = None) -> dict:
    """Read ``src``, synthesize it on the server, write ``out``; returns synthesize's info dict.

    Args:
        cfg: the server to use (``ClientConfig``).
        src: the input volume (any format ``read_volume`` knows).
        out: the output file (any format ``write_synthesis`` writes; atomic).
        model: ct2mr | mr2ct.
        batch_size: slices per request (capped by the message limit).
        progress: show a progress bar.
        options: what the user accepted (``outputs.OutputOptions``: accept, allow_windowed_ct).
        tta: test-time augmented copies to predict besides the input; the server answers each
            copy's slices as one prediction, the copies are mapped back and fused here.
        fusion: how the copies are fused (``Fusion``; default median).
    """
    from mrgan_tf.inference.outputs import OutputOptions, write_synthesis
    from mrgan_tf.inference.synthesis import refuse_implausible
    from mrgan_tf.io.readers import read_volume

    options = options or OutputOptions()
    vol = read_volume(src)              # bad input fails before the server is asked
    refuse_implausible(vol, INPUT_MODALITY[model], options.accept)
    remote = connect(cfg, model)
    predictor = Fusion((remote,), fusion or "median", tta) if tta.augment or fusion else remote
    try:
        return write_synthesis(predictor, vol, out, batch_size=batch_size, progress=progress, options=options)
    finally:
        remote.transport.close()


def main(argv):
    fv = flags.FLAGS
    if not fv.server:
        raise app.UsageError("--server is required (host:port or http://host:port)")
    if bool(fv.ct) == bool(fv.mr):
        raise app.UsageError("give exactly one of --ct or --mr")
    if not fv.out:
        raise app.UsageError("--out is required")
    model = fv.model_name or ("mr2ct" if fv.mr else "ct2mr")
    from mrgan_tf.inference.outputs import OutputOptions
    options = OutputOptions(accept=tuple(fv.accept), allow_windowed_ct=fv.allow_windowed_ct)
    with cli.user_errors("client"):   # ServingError is a SynthesisError, so a UserError
        requirements.require("client", server=fv.server)
        tta = tta_from_flags(fv)
        info = synthesize_remote(connection_from_flags(fv), fv.ct or fv.mr, fv.out, model, fv.batch_size,
                                 fv.progress, options, tta, fv.fusion)
    print(f"{info['output']}: {info['slices']} slices in {info['total_s']:.1f} s (server {info['model_s']:.1f} s)")
    if info.get("spread"):
        print(f"  spread of {info['fusion']['predictions']} predictions: {info['spread']}")
    return 0


run = cli.entry_point(define_flags, main)
