"""End to end: a real local cluster (coordinator, 3 shards, 2 serving replicas) on
loopback ports; the sample model uploaded with psctl; a Python grpcio client calling
inference.GRPCInferenceService on both replicas. Served outputs are checked against a
numpy forward pass of the same weights, before and after a training-style update, and
bad requests must get clear statuses while the cluster keeps serving."""
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time

import grpc
import numpy as np
import pytest

import inference_pb2 as pb
import inference_pb2_grpc as pb_grpc
from conftest import BUILD, SOURCE
import modelref

MODEL_DIR = SOURCE / "models" / "digits_mlp"
PSCTL = BUILD / "ps" / "psctl"


def wait_port(path, proc, what, timeout=20):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start-up")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {timeout}s")


class Cluster:
    def __init__(self, tmp, shards=3, replicas=2):
        self.tmp = pathlib.Path(tmp)
        self.procs = []
        coord_port = self.start("coordinator", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                                "--state-dir", self.tmp / "coord", "--heartbeat-ms", "200"])
        self.coordinator = f"127.0.0.1:{coord_port}"
        for i in range(1, shards + 1):
            self.start(f"shard-{i}", [BUILD / "ps" / "ps-shard", "--id", f"shard-{i}",
                                       "--coordinator", self.coordinator])
        self.serve = []
        for i in range(1, replicas + 1):
            port = self.start(f"serve-{i}", [BUILD / "serving" / "ps-serve", "--id", f"serve-{i}",
                                              "--coordinator", self.coordinator])
            self.serve.append(f"127.0.0.1:{port}")

    def start(self, name, argv):
        port_file = self.tmp / f"{name}.port"
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen([str(a) for a in argv] + ["--port-file", str(port_file)],
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return wait_port(port_file, p, name)

    def psctl(self, *args, check=True):
        r = subprocess.run([str(PSCTL), "--coordinator", self.coordinator, *args],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"psctl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text()

    def stop(self):
        """SIGTERM everything; every process must exit 0 (a clean shutdown)."""
        bad = []
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs:
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "hung"
            if rc != 0:
                bad.append(f"{name}: exit {rc}\n{self.log(name)[-3000:]}")
        return bad


@pytest.fixture(scope="module")
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(tmp)
        try:
            c.psctl("model", "upload", str(MODEL_DIR))
            for addr in c.serve:
                s = stub(addr)
                for _ in range(300):
                    if s.ModelReady(pb.ModelReadyRequest(name="digits_mlp"), timeout=2).ready:
                        break
                    time.sleep(0.05)
                else:
                    raise AssertionError(f"{addr} never got the model ready")
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


def stub(addr):
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(addr))


@pytest.fixture(scope="module")
def heldout():
    d = json.loads((MODEL_DIR / "heldout.json").read_text())
    return np.array(d["pixels"], dtype=np.float32), np.array(d["labels"])


@pytest.fixture(scope="module")
def reference():
    return modelref.load_model(MODEL_DIR)


def infer_raw(s, x, model="digits_mlp", name="pixels", **kw):
    x = np.ascontiguousarray(x, dtype="<f4")
    req = pb.ModelInferRequest(model_name=model, id="req-1", **kw)
    req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return s.ModelInfer(req, timeout=10)


def probs(resp):
    assert resp.outputs[0].name == "probabilities"
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(list(resp.outputs[0].shape))


def numpy_probs(reference, x):
    config, params = reference
    return np.concatenate([modelref.forward(config, params, {"pixels": x[i:i + 64]})["probabilities"]
                           for i in range(0, len(x), 64)])


def test_predictions_match_numpy_on_every_replica(cluster, heldout, reference):
    x, y = heldout
    want = numpy_probs(reference, x)
    for addr in cluster.serve:
        s = stub(addr)
        got = np.concatenate([probs(infer_raw(s, x[i:i + 64])) for i in range(0, len(x), 64)])
        assert got.shape == (len(x), 10)
        assert np.max(np.abs(got - want)) <= 1e-5
        assert (got.argmax(axis=1) == y).mean() >= 0.95


def test_typed_contents_and_metadata(cluster, heldout, reference):
    x, _ = heldout
    s = stub(cluster.serve[0])
    req = pb.ModelInferRequest(model_name="digits_mlp", model_version="1")
    inp = req.inputs.add(name="pixels", datatype="FP32", shape=[3, 64])
    inp.contents.fp32_contents.extend(x[:3].ravel().tolist())
    resp = s.ModelInfer(req, timeout=10)
    assert resp.model_name == "digits_mlp" and resp.model_version == "1"
    assert np.max(np.abs(probs(resp) - numpy_probs(reference, x[:3]))) <= 1e-5

    assert s.ServerLive(pb.ServerLiveRequest()).live
    assert s.ServerReady(pb.ServerReadyRequest()).ready
    assert s.ModelReady(pb.ModelReadyRequest(name="digits_mlp", version="1")).ready
    assert not s.ModelReady(pb.ModelReadyRequest(name="nope")).ready
    md = s.ModelMetadata(pb.ModelMetadataRequest(name="digits_mlp"))
    assert list(md.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [("pixels", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [("probabilities", "FP32", [-1, 10])]
    cfg = s.ModelConfig(pb.ModelConfigRequest(name="digits_mlp")).config
    assert cfg.max_batch_size == 64
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("pixels", pb.TYPE_FP32, [64])]
    sm = s.ServerMetadata(pb.ServerMetadataRequest())
    assert sm.name == "ps-serve" and "statistics" in sm.extensions
    st = s.ModelStatistics(pb.ModelStatisticsRequest(name="digits_mlp"))
    assert st.model_stats[0].inference_stats.success.count > 0


def test_pushed_update_shows_on_every_replica(cluster, heldout, reference):
    x, _ = heldout
    config, params = reference
    before = [infer_raw(stub(a), x[:4]) for a in cluster.serve]
    pv0 = [r.parameters["param_version"].int64_param for r in before]
    delta = np.zeros(10, dtype=np.float32)
    delta[3] = 2.5
    delta[7] = -1.25
    cluster.psctl("push", "digits_mlp", "fc2.bias", "--add", "--values", ",".join(str(float(v)) for v in delta))
    updated = dict(params)
    updated["fc2.bias"] = params["fc2.bias"] + delta
    want = modelref.forward(config, updated, {"pixels": x[:4]})["probabilities"]
    for addr, p0 in zip(cluster.serve, pv0):
        s = stub(addr)
        t0 = time.monotonic()
        while True:
            r = infer_raw(s, x[:4])
            if r.parameters["param_version"].int64_param > p0:
                break
            assert time.monotonic() - t0 < 10, f"{addr} never applied the update"
            time.sleep(0.005)
        got = probs(r)
        assert np.max(np.abs(got - want)) <= 1e-5
        assert np.max(np.abs(got - probs(before[0]))) > 1e-3  # it really changed
    # undo, so other tests see the uploaded weights
    cluster.psctl("push", "digits_mlp", "fc2.bias", "--add", "--values", ",".join(str(float(-v)) for v in delta))
    for addr in cluster.serve:
        t0 = time.monotonic()
        while np.max(np.abs(probs(infer_raw(stub(addr), x[:4])) - probs(before[0]))) > 1e-5:
            assert time.monotonic() - t0 < 10
            time.sleep(0.005)


def expect_error(code, fn, *words):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    for w in words:
        assert w in e.value.details(), e.value.details()
    return e.value.details()


def test_bad_inputs_get_clear_statuses(cluster, heldout):
    x, _ = heldout
    s = stub(cluster.serve[0])
    IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    expect_error(NF, lambda: infer_raw(s, x[:1], model="no_such_model"), "no_such_model")
    expect_error(NF, lambda: infer_raw(s, x[:1], model_version="9"), "version")
    expect_error(IA, lambda: infer_raw(s, x[:1], name="image"), "image", "pixels")
    expect_error(IA, lambda: infer_raw(s, x[:1, :63]), "shape", "[-1,64]")
    expect_error(IA, lambda: infer_raw(s, np.zeros((65, 64))), "65", "max_batch_size 64")

    def wrong_dtype():
        req = pb.ModelInferRequest(model_name="digits_mlp")
        req.inputs.add(name="pixels", datatype="INT32", shape=[1, 64])
        req.raw_input_contents.append(np.zeros(64, dtype=np.int32).tobytes())
        s.ModelInfer(req, timeout=5)
    expect_error(IA, wrong_dtype, "INT32", "FP32")

    def wrong_length():
        req = pb.ModelInferRequest(model_name="digits_mlp")
        req.inputs.add(name="pixels", datatype="FP32", shape=[2, 64])
        req.raw_input_contents.append(np.zeros(64, dtype=np.float32).tobytes())
        s.ModelInfer(req, timeout=5)
    expect_error(IA, wrong_length, "256 bytes", "512")

    def nan_input():
        v = np.zeros((1, 64), dtype=np.float32)
        v[0, 5] = np.nan
        infer_raw(s, v)
    expect_error(IA, nan_input, "finite")

    def unknown_output():
        req = pb.ModelInferRequest(model_name="digits_mlp")
        req.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
        req.raw_input_contents.append(np.zeros(64, dtype=np.float32).tobytes())
        req.outputs.add(name="logits_x")
        s.ModelInfer(req, timeout=5)
    expect_error(IA, unknown_output, "logits_x")

    raw = grpc.insecure_channel(cluster.serve[0]).unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
    expect_error(IA, lambda: raw(b"\x0a\xff\xff\xff\x0f", timeout=5), "malformed")

    # still serving, and every process still up
    assert probs(infer_raw(s, x[:2])).shape == (2, 10)
    for name, p in cluster.procs:
        assert p.poll() is None, f"{name} died"


def pulled_params(cluster, reference):
    """The model's parameters as the shards hold them now, and the sum of their chunk
    versions (what a replica's param_version equals once it has caught up)."""
    config, params = reference
    out, total = {}, 0
    for name in params:
        doc = json.loads(cluster.psctl("--json", "pull", "digits_mlp", name).stdout)
        out[name] = np.array(doc["values"], dtype=np.float32).reshape(doc["shape"])
        total += doc["version_sum"]
    return out, total


def wait_param_version(addr, x, want, timeout=10):
    s = stub(addr)
    t0 = time.monotonic()
    while True:
        r = infer_raw(s, x)
        if r.parameters["param_version"].int64_param == want:
            return r
        assert time.monotonic() - t0 < timeout, \
            f"{addr} at param_version {r.parameters['param_version'].int64_param}, want {want}"
        time.sleep(0.005)


def test_concurrent_updates_converge_while_serving(cluster, heldout, reference):
    """Training-style pushes to every tensor while both replicas serve: no request
    fails, and each replica ends exactly at the shards' state."""
    x, _ = heldout
    config, _ = reference
    rng = np.random.default_rng(1)
    errors, stop = [], False

    def load(addr):
        s = stub(addr)
        while not stop:
            try:
                assert probs(infer_raw(s, x[:8])).shape == (8, 10)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(f"{addr}: {e!r}")
                return

    threads = [threading.Thread(target=load, args=(a,)) for a in cluster.serve]
    for t in threads:
        t.start()
    try:
        for step in range(12):
            name = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"][step % 4]
            shape = reference[1][name].shape
            delta = (rng.standard_normal(shape) * 0.01).astype("<f4")
            with tempfile.NamedTemporaryFile(suffix=".f32") as f:
                f.write(delta.tobytes())
                f.flush()
                cluster.psctl("push", "digits_mlp", name, "--add", "--file", f.name)
    finally:
        stop = True
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    params, total = pulled_params(cluster, reference)
    want = modelref.forward(config, params, {"pixels": x[:64]})["probabilities"]
    for addr in cluster.serve:
        r = wait_param_version(addr, x[:64], total)
        assert np.max(np.abs(probs(r) - want)) <= 1e-5


def test_replica_started_later_serves_the_current_state(cluster, heldout, reference):
    x, _ = heldout
    config, _ = reference
    cluster.psctl("push", "digits_mlp", "fc1.bias", "--add", "--fill", "0.01")
    params, total = pulled_params(cluster, reference)
    port = cluster.start("serve-late", [BUILD / "serving" / "ps-serve", "--id", "serve-late",
                                        "--coordinator", cluster.coordinator])
    addr = f"127.0.0.1:{port}"
    s = stub(addr)
    t0 = time.monotonic()
    while not s.ModelReady(pb.ModelReadyRequest(name="digits_mlp"), timeout=2).ready:
        assert time.monotonic() - t0 < 20, "the late replica never loaded the model"
        time.sleep(0.02)
    r = wait_param_version(addr, x[:64], total)
    want = modelref.forward(config, params, {"pixels": x[:64]})["probabilities"]
    assert np.max(np.abs(probs(r) - want)) <= 1e-5
    # and it follows updates from then on
    cluster.psctl("push", "digits_mlp", "fc2.bias", "--add", "--fill", "-0.02")
    params, total = pulled_params(cluster, reference)
    want = modelref.forward(config, params, {"pixels": x[:64]})["probabilities"]
    for a in cluster.serve + [addr]:
        assert np.max(np.abs(probs(wait_param_version(a, x[:64], total)) - want)) <= 1e-5


def test_random_and_mutated_payloads_never_crash(cluster, heldout):
    """Every method of every process gets garbage and near-valid messages (a valid
    request with bytes flipped, truncated or extended). Each call must end with a gRPC
    status, every process must stay up, and serving must be unchanged."""
    import random
    import coordinator_pb2 as cpb
    import ps_pb2 as ppb

    x, _ = heldout
    rng = random.Random(7)
    ring = cpb.Ring.FromString(
        grpc.insecure_channel(cluster.coordinator).unary_unary(
            "/ps.Coordinator/GetRing", request_serializer=None, response_deserializer=None)(b"", timeout=5))
    shard = next(n.addr for n in ring.nodes if n.in_ring)
    valid_infer = pb.ModelInferRequest(model_name="digits_mlp")
    valid_infer.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    valid_infer.raw_input_contents.append(np.zeros(64, dtype="<f4").tobytes())
    targets = [
        (cluster.serve[0], "/inference.GRPCInferenceService/ModelInfer", valid_infer.SerializeToString()),
        (cluster.serve[0], "/inference.GRPCInferenceService/ModelMetadata",
         pb.ModelMetadataRequest(name="digits_mlp").SerializeToString()),
        (cluster.serve[0], "/inference.GRPCInferenceService/ModelConfig",
         pb.ModelConfigRequest(name="digits_mlp").SerializeToString()),
        (shard, "/ps.ParameterServer/Push",
         ppb.PushRequest(epoch=ring.epoch, keys=[1], lengths=[2], values=b"\0" * 8).SerializeToString()),
        (shard, "/ps.ParameterServer/Pull", ppb.PullRequest(epoch=ring.epoch, keys=[1, 2]).SerializeToString()),
        (cluster.coordinator, "/ps.Coordinator/RegisterModel", cpb.RegisterModelRequest(
            model=cpb.ModelInfo(name="fuzz", config_json="{}", tensors=[cpb.TensorInfo(
                name="t", dtype="FP32", shape=[2], chunk_floats=2, chunks=1)])).SerializeToString()),
        (cluster.coordinator, "/ps.Coordinator/AddNode", cpb.AddNodeRequest(
            node=cpb.NodeInfo(id="fuzz", addr="127.0.0.1:1")).SerializeToString()),
    ]
    for addr, method, valid in targets:
        call = grpc.insecure_channel(addr).unary_unary(method, request_serializer=None,
                                                       response_deserializer=None)
        for i in range(60):
            if i % 3 == 0:
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
            else:
                b = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    op = rng.randrange(3)
                    if op == 0 and b:
                        b[rng.randrange(len(b))] = rng.randrange(256)
                    elif op == 1 and b:
                        del b[rng.randrange(len(b)):]
                    else:
                        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
                payload = bytes(b)
            try:
                call(payload, timeout=5)
            except grpc.RpcError as e:
                assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung"
                assert e.code() != grpc.StatusCode.UNAVAILABLE, f"{method} took the server down"
    for name, p in cluster.procs:
        assert p.poll() is None, f"{name} died"
    # the fuzzing may have added a node "fuzz" and a model "fuzz"; serving is intact
    assert probs(infer_raw(stub(cluster.serve[0]), x[:2])).shape == (2, 10)
