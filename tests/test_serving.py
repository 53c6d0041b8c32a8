"""TF Serving at the protocol level: deployment files, warmup, the client, REST JSON rules.

TF Serving's binary cannot be installed here, so these tests run against
``serving_double`` (a test double of TF Serving's PredictionService and REST
API, backed by the TF1 SavedModel loader TF Serving uses) on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import serving_double
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from conftest import head_ct, oblique_lps_affine, tiny_export
from mrgan_tf.inference import client, predictors, synthesis
from mrgan_tf.io.readers import read_volume
from mrgan_tf.io.volumes import Volume
from mrgan_tf.io.writers import write_nifti
from mrgan_tf.serving import files as serving_files

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "SERVING.md")


@pytest.fixture(scope="module")
def exported(tiny_records, tmp_path_factory):
    return tiny_export(tmp_path_factory, tiny_records)


@pytest.fixture(scope="module")
def servers(exported):
    with serving_double.serving(os.path.join(exported, serving_files.MODEL_CONFIG)) as s:
        yield s


@pytest.fixture
def grpc_cfg(servers):
    return client.ClientConfig(servers.grpc_target, timeout_s=60.0, retries=2, backoff_s=0.0)


# --------------------------------------------------------------------------- deployment files


def _batching_parameters_class():
    """BatchingParameters from its published field list (session_bundle_config.proto is not on PyPI)."""
    f = descriptor_pb2.FileDescriptorProto(name="batching_test.proto", package="test",
                                           dependency=["google/protobuf/wrappers.proto"])
    m = f.message_type.add(name="BatchingParameters")
    wrapped = {"max_batch_size": 1, "batch_timeout_micros": 2, "max_enqueued_batches": 3, "num_batch_threads": 4}
    for name, number in wrapped.items():
        m.field.add(name=name, number=number, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                    type_name=".google.protobuf.Int64Value")
    m.field.add(name="thread_pool_name", number=5, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                type_name=".google.protobuf.StringValue")
    m.field.add(name="allowed_batch_sizes", number=6, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    m.field.add(name="pad_variable_length_inputs", number=7, type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("test.BatchingParameters"))


def test_models_config_and_batching_parameters_parse(exported, tmp_path):
    with open(os.path.join(exported, serving_files.MODEL_CONFIG)) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"ct2mr", "mr2ct"}
    for name, c in entries.items():
        assert c.base_path == os.path.join(os.path.abspath(exported), name)
        assert c.model_platform == "tensorflow" and c.model_version_policy.latest.num_versions == 1
    with open(os.path.join(exported, serving_files.BATCHING_PARAMETERS)) as f:
        batching = text_format.Parse(f.read(), _batching_parameters_class()())
    sizes = list(batching.allowed_batch_sizes)
    assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value == 32
    assert batching.num_batch_threads.value >= 1 and batching.batch_timeout_micros.value > 0
    # base paths as a container sees them
    paths = serving_files.write_root_files(str(tmp_path), ["ct2mr"], base_path="/models/")
    text = open(paths[serving_files.MODEL_CONFIG]).read()
    assert text_format.Parse(text, model_server_config_pb2.ModelServerConfig()).model_config_list.config[0] \
        .base_path == "/models/ct2mr"
    with pytest.raises(ValueError, match="increasing"):
        serving_files.BatchingConfig(allowed_batch_sizes=(8, 4))


def test_warmup_requests_run_through_the_tf1_loader(exported, servers):
    seen = {}
    for name in ("ct2mr", "mr2ct"):
        path = os.path.join(exported, name, "1", serving_files.WARMUP_DIR, serving_files.WARMUP_FILE)
        logs = serving_files.read_warmup(path)
        assert 0 < len(logs) <= serving_files.MAX_WARMUP_RECORDS
        assert os.path.getsize(path) < 64 << 10            # splat tensors: kilobytes, not megabytes
        # the double replayed every record on load, as TF Serving does
        assert servers.repository.warmup_replayed[f"{name}/1"] == len(logs)
        loaded = servers.repository.find(name, None)
        reloaded = tf.saved_model.load(os.path.join(exported, name, "1"))
        for log in logs:
            req = log.predict_log.request
            assert req.model_spec.name == name
            sig = req.model_spec.signature_name
            seen.setdefault(name, {}).setdefault(sig, set()).add(
                tuple(d.size for d in next(iter(req.inputs.values())).tensor_shape.dim) if req.inputs else ())
            out = loaded.run(req)
            assert set(out) == set(loaded.signatures[sig].outputs)
            if sig == "normalised":   # TF1 session outputs == the TF2 signature's
                x = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
                want = reloaded.signatures[sig](**{k: tf.constant(v) for k, v in x.items()})
                for k, v in out.items():
                    np.testing.assert_allclose(v, want[k].numpy(), atol=1e-5)
    sizes = {n for n, *_ in seen["ct2mr"]["serving_default"]}
    assert sizes == set(serving_files.BatchingConfig().allowed_batch_sizes)
    assert set(seen["mr2ct"]) == {"serving_default", "serving_rows", "with_mr_range", "normalised",
                                  "preprocessing_parameters", "preprocessing_parameters_rows"}


# --------------------------------------------------------------------------- the gRPC double itself


def test_double_checks_requests_as_tf_serving_does(servers, exported):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(servers.grpc_target))
    x = np.zeros((2, 32, 32, 1), np.float32)
    ok = serving_files.predict_request("ct2mr", "normalised", {"ct": x})
    ok.output_filter.append("mr")
    assert set(stub.Predict(ok, timeout=30).outputs) == {"mr"}
    both = serving_files.predict_request("ct2mr", "serving_default", {"ct": x[..., 0]})
    both.output_filter.append("mr_255")
    assert set(stub.Predict(both, timeout=30).outputs) == {"mr_255"}   # output_filter honoured
    cases = [
        (serving_files.predict_request("ct2mr", "normalised", {"ct": x.astype(np.float64)}),
         grpc.StatusCode.INVALID_ARGUMENT, "to be float32 but float64"),
        (serving_files.predict_request("ct2mr", "normalised", {"mr": x}), grpc.StatusCode.INVALID_ARGUMENT,
         "Missing but required: ['ct']"),
        (serving_files.predict_request("ct2mr", "nope", {"ct": x}), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found'),
        (serving_files.predict_request("ct3mr", "normalised", {"ct": x}), grpc.StatusCode.NOT_FOUND,
         "Latest(ct3mr)"),
        (serving_files.predict_request("ct2mr", "normalised", {"ct": x}, version=9), grpc.StatusCode.NOT_FOUND,
         "Specific(ct2mr, 9)"),
    ]
    for req, code, text in cases:
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(req, timeout=30)
        assert e.value.code() == code and text in e.value.details()
    bad_filter = serving_files.predict_request("ct2mr", "normalised", {"ct": x})
    bad_filter.output_filter.append("ct_hu")
    with pytest.raises(grpc.RpcError, match="output tensor alias not found"):
        stub.Predict(bad_filter, timeout=30)


# --------------------------------------------------------------------------- the client


def test_client_volume_over_grpc_equals_synthesize(servers, exported, grpc_cfg, tmp_path):
    vol = Volume(head_ct((24, 28, 20)), oblique_lps_affine(), "mem")
    for name in ("ct2mr", "mr2ct"):
        src = vol if name == "ct2mr" else Volume(np.clip(vol.data + 1000.0, 0, None), vol.affine, "mem")
        local, _ = synthesis.synthesize_volume(predictors.load_predictor(exported, name), src)
        remote_predictor = client.connect(grpc_cfg, name)
        assert remote_predictor.preprocess == predictors.load_predictor(exported, name).preprocess
        remote, _ = synthesis.synthesize_volume(remote_predictor, src)
        assert remote.data.dtype == local.data.dtype
        np.testing.assert_array_equal(remote.affine, local.affine)
        np.testing.assert_allclose(remote.data.astype(np.float32), local.data.astype(np.float32), atol=1e-3)
    # the file path: write_synthesis does the rest, atomically
    write_nifti(vol, tmp_path / "ct.nii.gz")
    info = client.synthesize_remote(grpc_cfg, str(tmp_path / "ct.nii.gz"), str(tmp_path / "syn.nii.gz"), "ct2mr")
    assert read_volume(tmp_path / "syn.nii.gz").shape == vol.shape and info["slices"] > 0


def test_client_tta_sends_each_copy_and_fuses_here_as_synthesize_does(servers, exported, grpc_cfg, tmp_path):
    from mrgan_tf.inference.tta import TTAConfig
    vol = Volume(head_ct((24, 28, 20)), oblique_lps_affine(), "mem")
    write_nifti(vol, tmp_path / "ct.nii.gz")
    flip = TTAConfig(("flip",))
    before = len(servers.grpc_calls)
    info = client.synthesize_remote(grpc_cfg, str(tmp_path / "ct.nii.gz"), str(tmp_path / "syn.nii.gz"), "ct2mr",
                                    tta=flip)
    sent = [r for r in servers.grpc_calls[before:] if r.model_spec.signature_name == "normalised"]
    local = predictors.Fusion((predictors.load_predictor(exported, "ct2mr"),), tta=flip)
    out, spread, local_info = synthesis.synthesize_with_spread(local, read_volume(tmp_path / "ct.nii.gz"))
    assert sum(tf.make_ndarray(r.inputs["ct"]).shape[0] for r in sent) == info["slices"] == local_info["slices"]
    np.testing.assert_allclose(read_volume(tmp_path / "syn.nii.gz").data, out.data, atol=1e-3)
    np.testing.assert_allclose(read_volume(tmp_path / "syn_sd.nii.gz").data, spread.data, atol=1e-3)
    assert info["fusion"]["augmentations"] == ["identity", "flip"]


def test_batches_are_ordered_and_capped_by_the_message_limit(servers, grpc_cfg):
    predictor = client.connect(grpc_cfg, "ct2mr")
    predictor.max_batch = 3                              # as if the limit allowed 3 slices per message
    stack = np.random.default_rng(0).uniform(0, 1, (8, 32, 32)).astype(np.float32)
    before = len(servers.grpc_calls)
    out = predictor.predict01(stack, batch_size=16)
    sent = [r for r in servers.grpc_calls[before:] if r.model_spec.signature_name == "normalised"]
    assert [tf.make_ndarray(r.inputs["ct"]).shape[0] for r in sent] == [3, 3, 2]
    np.testing.assert_allclose(np.concatenate([tf.make_ndarray(r.inputs["ct"])[..., 0] for r in sent]),
                               2 * stack - 1, atol=1e-6)           # in order
    assert all(list(r.output_filter) == ["mr"] for r in sent)
    assert out.shape == stack.shape and 0.0 <= out.min() and out.max() <= 1.0
    # 4 MB (gRPC's default) at 256 x 256: 14 float32 slices fit with headroom; JSON needs far fewer
    big = dataclasses.replace(predictor.preprocess, image_size=256)
    assert client.max_batch_for(big, predictor.transport, 4 << 20) == 14
    assert client.max_batch_for(big, client.RestTransport(grpc_cfg), 4 << 20) == 3
    with pytest.raises(client.ServingError, match="exceeds the message limit"):
        client.max_batch_for(big, predictor.transport, 100_000)


def test_client_over_rest_equals_synthesize(servers, exported):
    cfg = client.ClientConfig(servers.rest_url, timeout_s=60.0, retries=1)
    vol = Volume(head_ct((20, 24, 6)), np.eye(4), "mem")
    before = len(servers.rest_calls)
    remote, _ = synthesis.synthesize_volume(client.connect(cfg, "ct2mr"), vol, batch_size=4)
    local, _ = synthesis.synthesize_volume(predictors.load_predictor(exported, "ct2mr"), vol)
    np.testing.assert_allclose(remote.data, local.data, atol=1e-3)
    bodies = [json.loads(b) for _, b in servers.rest_calls[before:]]
    assert bodies[0]["signature_name"] == "preprocessing_parameters_rows"
    assert all("inputs" in b for b in bodies[1:]) and len(bodies) == 1 + 2      # 6 slices in batches of 4


def test_client_errors_are_clear(servers, grpc_cfg):
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    waits = []
    cfg = client.ClientConfig(f"127.0.0.1:{closed}", retries=3, backoff_s=0.25, timeout_s=10)
    with pytest.raises(client.ServingError, match=r"unreachable \(UNAVAILABLE after 3 tries\)"):
        client.connect(cfg, "ct2mr", transport=client.GrpcTransport(cfg, sleep=waits.append))
    assert waits == [0.25, 0.5]                           # bounded, exponential
    with pytest.raises(client.ServingError, match="model 'ct3mr' not found|unknown model"):
        client.connect(grpc_cfg, "ct3mr")
    missing = client.ClientConfig(grpc_cfg.server, version=7, retries=1)
    with pytest.raises(client.ServingError, match="version 7 of model 'ct2mr' not found"):
        client.connect(missing, "ct2mr")
    transport = client.GrpcTransport(grpc_cfg)
    with pytest.raises(client.ServingError, match="has no signature 'nope'"):
        transport.predict("ct2mr", "nope", {"ct": np.zeros((1, 32, 32, 1), np.float32)})
    # A 1 us deadline is not enough: gRPC's timer can fire after a fast answer (seen under load),
    # so the double holds its answer until the 0.2 s deadline has passed.
    hurried = client.GrpcTransport(client.ClientConfig(grpc_cfg.server, timeout_s=0.2, retries=1))
    with servers.held(), pytest.raises(client.ServingError, match="no answer within 0.2 s \\(deadline exceeded\\)"):
        hurried.predict("ct2mr", "normalised", {"ct": np.zeros((1, 32, 32, 1), np.float32)})
    with pytest.raises(client.ServingError, match="--server=localhost: expected host:port"):
        client.ClientConfig("localhost")
    rest_waits = []
    rest = client.ClientConfig(f"http://127.0.0.1:{closed}", retries=2, backoff_s=0.125)
    with pytest.raises(client.ServingError, match="unreachable"):
        client.connect(rest, "ct2mr", transport=client.RestTransport(rest, sleep=rest_waits.append))
    assert rest_waits == [0.125]
    with pytest.raises(client.ServingError, match="version 7 of model 'mr2ct' not found"):
        client.connect(client.ClientConfig(servers.rest_url, version=7, retries=1), "mr2ct")


# --------------------------------------------------------------------------- REST JSON rules


def _rest(servers, model, doc) -> tuple[int, dict]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"{servers.rest_url}/v1/models/{model}:predict", json.dumps(doc).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _small_inputs(signature: str, n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    if signature == "normalised":
        return {"x": rng.uniform(-1, 1, (n, 32, 32, 1)).astype(np.float32)}
    if signature == "preprocessing_parameters_rows":
        return {"row": np.zeros(n, np.int32)}
    inputs = {"x": rng.uniform(0, 500, (n, 5, 4)).astype(np.float32)}
    if signature == "with_mr_range":
        inputs["mr_range"] = np.tile(np.float32([[0.0, 600.0]]), (n, 1))
    return inputs


def test_every_signature_but_two_is_valid_in_row_format(servers):
    """Row and columnar payloads built by the client pass TF Serving's JSON rules, responses too."""
    for model, arg in (("ct2mr", "ct"), ("mr2ct", "mr")):
        signatures = [s for s in servers.repository.find(model, None).signatures if not s.startswith("__")]
        for sig in signatures:   # (__saved_model_init_op is TensorFlow's, not a serving signature)
            if sig == "preprocessing_parameters":
                status, doc = _rest(servers, model, {"signature_name": sig, "inputs": {}})
                assert status == 400 and "Failed to get input map" in doc["error"]
                continue
            inputs = {(arg if k == "x" else k): v for k, v in _small_inputs(sig).items()}
            col_status, col = _rest(servers, model, client.columnar_payload(sig, inputs))
            assert col_status == 200, (model, sig, col)
            row_status, row = _rest(servers, model, client.row_payload(sig, inputs))
            if model == "mr2ct" and sig == "serving_default":        # mr_range [2]: columnar only
                assert row_status == 400 and "batch sizes" in row["error"]
                continue
            assert row_status == 200, (model, sig, row)
            assert len(row["predictions"]) == 3
            outputs = col["outputs"] if isinstance(col["outputs"], dict) else None
            if outputs and sig != "preprocessing_parameters_rows":   # same numbers both ways
                for k, v in outputs.items():
                    np.testing.assert_allclose([p[k] for p in row["predictions"]], v, atol=1e-4)
    status, doc = _rest(servers, "mr2ct", {"signature_name": "serving_rows",
                                           "instances": [[[1.0, 2.0]], [[1.0, 2.0, 3.0]]]})
    assert status == 400                                  # ragged instances are rejected
    status, doc = _rest(servers, "ct2mr", {"instances": [[[True, 2.0]]]})
    assert status == 400 and "not of expected type" in doc["error"]


def _doc_examples() -> list[tuple[str, dict]]:
    text = open(DOCS).read()
    found = re.findall(r"curl -s -X POST http://localhost:8501/v1/models/(\w+):predict -d '(.*?)'", text, re.S)
    return [(model, json.loads(body)) for model, body in found]


def test_docs_rest_examples_are_accepted(servers):
    examples = _doc_examples()
    assert len(examples) >= 4
    for model, doc in examples:
        status, answer = _rest(servers, model, doc)
        assert status == 200, (model, doc, answer)
        key = "predictions" if "instances" in doc else "outputs"
        assert key in answer


# --------------------------------------------------------------------------- CLIs


def test_cli_client_and_synthesize_server_flag(servers, tmp_path):
    src = tmp_path / "ct.nii.gz"
    write_nifti(Volume(head_ct((24, 28, 20)), np.eye(4)), src)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    ok = subprocess.Popen([sys.executable, "-m", "mrgan_tf.synthesize", f"--server={servers.grpc_target}",
                           f"--ct={src}", f"--out={tmp_path / 'syn.nii.gz'}", "--noprogress"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    bad = subprocess.Popen([sys.executable, "-m", "mrgan_tf.client", f"--server=127.0.0.1:{closed}", "--retries=1",
                            f"--ct={src}", f"--out={tmp_path / 'bad.nii.gz'}", "--noprogress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, ok_err = ok.communicate(timeout=180)
    _, bad_err = bad.communicate(timeout=180)
    assert ok.returncode == 0, ok_err[-2000:]
    assert read_volume(tmp_path / "syn.nii.gz").shape == (24, 28, 20)
    assert bad.returncode == 1 and f"127.0.0.1:{closed}: server unreachable" in bad_err
    assert not (tmp_path / "bad.nii.gz").exists()


# --------------------------------------------------------------------------- 2.5D: stacking inside the graph


@pytest.fixture(scope="module")
def stack_export(tmp_path_factory):
    """A tiny 2.5D (k = 1) model exported with its preprocessing: clients send ordered slices."""
    from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig
    from mrgan_tf.preprocess import PreprocessConfig
    from mrgan_tf.serving import export
    model = MRGAN(MRGANConfig(image_size=32, ngf=4, n_blocks=1, ndf_scale=0.125, seed=2, context_slices=1))
    out = str(tmp_path_factory.mktemp("stack_export"))
    export.export_model(model, PreprocessConfig(image_size=32, context_slices=1), out)
    return out, model


def test_stack_model_serves_an_ordered_volume_and_overlapping_chunks(stack_export):
    from mrgan_tf.preprocess import context
    out, model = stack_export
    sig = tf.saved_model.load(os.path.join(out, "ct2mr", "1")).signatures["serving_default"]
    hu = np.random.default_rng(3).uniform(-100, 120, (9, 30, 28)).astype(np.float32)
    whole = sig(ct=tf.constant(hu))["mr"].numpy()
    assert whole.shape == hu.shape
    # The documented chunking (docs/SERVING.md): 2k slices of overlap each side, their outputs dropped.
    k, parts = 1, []
    for lo, hi in ((0, 4), (4, 7), (7, 9)):
        a, b = max(0, lo - 2 * k), min(len(hu), hi + 2 * k)
        parts.append(sig(ct=tf.constant(hu[a:b]))["mr"].numpy()[lo - a:lo - a + hi - lo])
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)
    # The graph is the Keras generator on edge-clamped stacks, its predictions averaged back.
    normalised = tf.saved_model.load(os.path.join(out, "ct2mr", "1")).signatures["normalised"]
    x = np.random.default_rng(4).uniform(-1, 1, (5, 32, 32, 1)).astype(np.float32)
    stacks = context.neighbour_stack(x[..., 0], k)
    want = context.average_overlaps(model.syn_mr(stacks, training=False).numpy(), k)
    np.testing.assert_allclose(normalised(ct=tf.constant(x))["mr"].numpy()[..., 0], want, atol=1e-5)
    params = tf.saved_model.load(os.path.join(out, "ct2mr", "1")).signatures["preprocessing_parameters"]()
    assert json.loads(params["preprocess_json"].numpy())["context_slices"] == 1


def test_stack_model_runs_in_saved_model_cli_and_synthesize(stack_export, tmp_path):
    out, _ = stack_export
    version_dir = os.path.join(out, "ct2mr", "1")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    run = subprocess.run([cli, "run", "--dir", version_dir, "--tag_set", "serve", "--signature_def",
                          "serving_default", "--input_exprs", "ct=" + json.dumps(np.full((4, 3, 3), 40.0).tolist())],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Result for output key mr_255" in run.stdout
    pred = predictors.load_predictor(out, "ct2mr")
    assert pred.preprocess.context_slices == 1
    ct = Volume(head_ct((20, 24, 12)), oblique_lps_affine(), str(tmp_path / "ct.nii.gz"))
    syn, info = synthesis.synthesize_volume(pred, ct, batch_size=3)
    whole, _ = synthesis.synthesize_volume(pred, ct, batch_size=64)
    np.testing.assert_allclose(syn.data, whole.data, atol=1e-3)
    assert syn.shape == ct.shape and info["slices"] > 0
