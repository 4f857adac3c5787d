"""End to end: a real local cluster (coordinator, 3 shards, 2 serving replicas) on
loopback ports; the sample model uploaded with psctl; a Python grpcio client calling
inference.GRPCInferenceService on both replicas. Served outputs are checked against a
numpy forward pass of the same weights (tests/e2e/modelref.py), before and after
training-style updates, after a shard restart, for a model whose first load failed,
and for weights that overflow; bad requests must get clear statuses while the cluster
keeps serving. (Hostile requests and stalled streams: test_serve_hostile.py.)"""
import json
import tempfile
import threading

import grpc
import numpy as np
import pytest

import inference_pb2 as pb
import modelref
from serve_cluster import (MODEL_DIR, PSCTL, Cluster, infer_raw, model_info, output, param_version,
                           poll, probs, stub, wait_outputs, wait_ready)


@pytest.fixture(scope="module")
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(tmp)
        try:
            c.psctl("model", "upload", str(MODEL_DIR))
            for addr in c.serve:
                wait_ready(addr)
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster for one test that restarts or breaks things."""
    made = []

    def make(**kw):
        made.append(Cluster(tmp_path / f"c{len(made)}", **kw))
        return made[-1]

    yield make
    bad = [b for c in made for b in c.stop()]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def heldout():
    d = json.loads((MODEL_DIR / "heldout.json").read_text())
    return np.array(d["pixels"], dtype=np.float32), np.array(d["labels"])


@pytest.fixture(scope="module")
def reference():
    return modelref.load_model(MODEL_DIR)


def numpy_probs(config, params, x):
    return np.concatenate([modelref.forward(config, params, {"pixels": x[i:i + 64]})["probabilities"]
                           for i in range(0, len(x), 64)])


def pulled_params(cluster, reference):
    """The model's parameters as the shards hold them now."""
    out = {}
    for name in reference[1]:
        doc = json.loads(cluster.psctl("--json", "pull", "digits_mlp", name).stdout)
        out[name] = np.array(doc["values"], dtype=np.float32).reshape(doc["shape"])
    return out


def test_predictions_match_numpy_on_every_replica(cluster, heldout, reference):
    x, y = heldout
    want = numpy_probs(*reference, x)
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
    assert np.max(np.abs(probs(resp) - numpy_probs(*reference, x[:3]))) <= 1e-5

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
    before = probs(infer_raw(stub(cluster.serve[0]), x[:4]))
    delta = np.zeros(10, dtype=np.float32)
    delta[3] = 2.5
    delta[7] = -1.25
    cluster.push("digits_mlp", "fc2.bias", delta)
    updated = dict(params, **{"fc2.bias": params["fc2.bias"] + delta})
    want = modelref.forward(config, updated, {"pixels": x[:4]})["probabilities"]
    assert np.max(np.abs(want - before)) > 1e-3  # it really changes
    for addr in cluster.serve:
        seen = []
        wait_outputs(addr, x[:4], want, "never applied the update", seen=seen)
        assert seen == sorted(seen), f"param_version went backwards: {seen}"
    cluster.push("digits_mlp", "fc2.bias", -delta)  # undo, so other tests see the upload
    for addr in cluster.serve:
        wait_outputs(addr, x[:4], before, "never applied the undo")


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

    def request(dtype="FP32", shape=(1, 64), raw=np.zeros(64, dtype="<f4").tobytes(), outputs=()):
        req = pb.ModelInferRequest(model_name="digits_mlp")
        req.inputs.add(name="pixels", datatype=dtype, shape=list(shape))
        req.raw_input_contents.append(raw)
        for o in outputs:
            req.outputs.add(name=o)
        return lambda: s.ModelInfer(req, timeout=5)

    expect_error(IA, request(dtype="INT32"), "INT32", "FP32")
    expect_error(IA, request(shape=(2, 64)), "256 bytes", "512")
    nan = np.zeros(64, dtype="<f4")
    nan[5] = np.nan
    expect_error(IA, request(raw=nan.tobytes()), "finite")
    expect_error(IA, request(outputs=["logits_x"]), "logits_x")
    expect_error(IA, request(outputs=["probabilities", "probabilities"]), "twice")
    raw = grpc.insecure_channel(cluster.serve[0]).unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
    expect_error(IA, lambda: raw(b"\x0a\xff\xff\xff\x0f", timeout=5), "malformed")
    assert probs(infer_raw(s, x[:2])).shape == (2, 10)  # still serving
    for name, p in cluster.procs.items():
        assert p.poll() is None, f"{name} died"


def test_concurrent_updates_converge_while_serving(cluster, heldout, reference):
    """Training-style pushes to every tensor while both replicas serve: no request
    fails, param_version never goes backwards, and each replica ends exactly at the
    shards' state."""
    x, _ = heldout
    config, _ = reference
    rng = np.random.default_rng(1)
    errors, seen, stop = [], {a: [] for a in cluster.serve}, threading.Event()

    def load(addr):
        s = stub(addr)
        while not stop.is_set():
            try:
                r = infer_raw(s, x[:8])
                assert probs(r).shape == (8, 10)
                seen[addr].append(param_version(r))
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(f"{addr}: {e!r}")
                return

    threads = [threading.Thread(target=load, args=(a,)) for a in cluster.serve]
    for t in threads:
        t.start()
    try:
        for step in range(12):
            name = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"][step % 4]
            cluster.push("digits_mlp", name, rng.standard_normal(reference[1][name].shape) * 0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    for addr, pvs in seen.items():
        assert pvs == sorted(pvs), f"{addr}: param_version went backwards"
    want = numpy_probs(config, pulled_params(cluster, reference), x[:64])
    for addr in cluster.serve:
        wait_outputs(addr, x[:64], want, "did not converge to the shards' state")


def test_replica_started_later_serves_the_current_state(cluster, heldout, reference):
    x, _ = heldout
    config, _ = reference
    cluster.psctl("push", "digits_mlp", "fc1.bias", "--add", "--fill", "0.01")
    want = numpy_probs(config, pulled_params(cluster, reference), x[:64])
    addr = cluster.start_replica("serve-late")
    wait_ready(addr)
    assert np.max(np.abs(probs(infer_raw(stub(addr), x[:64])) - want)) <= 1e-5
    # and it follows updates from then on
    cluster.psctl("push", "digits_mlp", "fc2.bias", "--add", "--fill", "-0.02")
    want = numpy_probs(config, pulled_params(cluster, reference), x[:64])
    for a in cluster.serve + [addr]:
        wait_outputs(a, x[:64], want, "did not follow the update")


def test_nonfinite_outputs_are_an_error(cluster, heldout, tmp_path):
    """Finite weights whose products overflow (a shard refuses only non-finite values):
    a replica must answer an error naming the model, version and output, never NaN with
    OK, and log it once per streak."""
    import shutil
    x, _ = heldout
    model = tmp_path / "overflow_mlp"
    shutil.copytree(MODEL_DIR, model)
    config = json.loads((model / "config.json").read_text())
    config["name"] = "overflow_mlp"
    (model / "config.json").write_text(json.dumps(config))
    cluster.psctl("model", "upload", str(model))
    for addr in cluster.serve:
        wait_ready(addr, "overflow_mlp")
    good = modelref.load_model(model)[1]["fc1.weight"]
    cluster.psctl("push", "overflow_mlp", "fc1.weight", "--assign", "--fill", "3e38")
    for addr in cluster.serve:
        s = stub(addr)

        def refused():
            try:
                r = infer_raw(s, x[:4], model="overflow_mlp")
            except grpc.RpcError as e:
                return e
            assert np.all(np.isfinite(output(r))), f"{addr} answered non-finite outputs with OK"
            return None

        e = poll(refused, f"{addr} never refused the overflowing model")
        assert e.code() == grpc.StatusCode.INTERNAL, e.details()
        for word in ("overflow_mlp", "version 1", "'probabilities'", "non-finite"):
            assert word in e.details(), e.details()
        for _ in range(3):
            assert refused() is not None
    cluster.push("overflow_mlp", "fc1.weight", good, op="--assign")
    params = dict(modelref.load_model(model)[1])
    want = modelref.forward(config, params, {"pixels": x[:4]})["probabilities"]
    for i, addr in enumerate(cluster.serve):
        wait_outputs(addr, x[:4], want, "never recovered", model="overflow_mlp")
        log = cluster.log(f"serve-{i + 1}")
        assert log.count("model overflow_mlp version 1 produced a non-finite value") == 1, log[-3000:]
        assert "overflow_mlp version 1 produces finite outputs again" in log


def test_failed_first_load_is_retried(own_cluster, heldout, reference):
    """A model registered before its data is there: the replica's first loads fail
    (chunks missing); it keeps retrying with backoff, without a registry change, and
    becomes ready once the data is pushed."""
    x, _ = heldout
    c = own_cluster(shards=2, replicas=0)
    info, params = model_info(MODEL_DIR)
    register = grpc.insecure_channel(c.coordinator).unary_unary(
        "/ps.Coordinator/RegisterModel", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b)
    import coordinator_pb2 as cpb
    register(cpb.RegisterModelRequest(model=info), timeout=10)
    addr = c.start_replica("serve-1")
    poll(lambda: "cannot load model digits_mlp version 1" in c.log("serve-1"),
         "the replica never tried to load the model")
    assert not stub(addr).ModelReady(pb.ModelReadyRequest(name="digits_mlp"), timeout=5).ready
    for name, values in params.items():
        c.push("digits_mlp", name, values, op="--assign")
    wait_ready(addr, timeout=30)
    wait_outputs(addr, x[:64], numpy_probs(*reference, x[:64]), "wrong outputs")
    log = c.log("serve-1")
    assert log.count("cannot load model digits_mlp version 1") == 1, log[-3000:]  # once per streak
    assert "failed attempts" in log


def test_shard_restart_then_reupload_matches_numpy(own_cluster, heldout, reference):
    """A shard restarts (losing its data), the model's values are pushed again (ASSIGN)
    and training goes on (ADDs): every replica must re-pull what it held from that
    shard and end at exactly the shards' state, and param_version never goes back."""
    x, _ = heldout
    config, params = reference
    c = own_cluster(shards=2, replicas=2)
    c.psctl("model", "upload", str(MODEL_DIR))
    for addr in c.serve:
        wait_ready(addr)
    rng = np.random.default_rng(7)
    for name in params:  # versions move on before the restart
        c.push("digits_mlp", name, rng.standard_normal(params[name].shape) * 0.01)
    state = pulled_params(c, reference)
    seen = {a: [] for a in c.serve}
    for addr in c.serve:
        wait_outputs(addr, x[:64], numpy_probs(config, state, x[:64]), "before restart",
                     seen=seen[addr])
    c.restart_shard("shard-1")
    for name in params:  # re-upload what the shards held, then train on
        c.push("digits_mlp", name, state[name], op="--assign")
    for step in range(2):
        for name in params:
            delta = (rng.standard_normal(params[name].shape) * 0.01).astype("<f4")
            c.push("digits_mlp", name, delta)
            state[name] = state[name] + delta
    now = pulled_params(c, reference)
    assert all(np.allclose(v, now[k], atol=1e-5) for k, v in state.items())
    want = numpy_probs(config, now, x[:64])
    for addr in c.serve:
        wait_outputs(addr, x[:64], want, "diverged after the shard restart", seen=seen[addr])
        assert seen[addr] == sorted(seen[addr]), f"{addr}: param_version went backwards"
    for i in (1, 2):
        assert "restarted (new incarnation)" in c.log(f"serve-{i}")


def test_random_and_mutated_payloads_never_crash(cluster, heldout):
    """(Runs last: it may leave a node "fuzz" on the ring.) Every method of every process gets garbage and near-valid messages (a valid
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
    for name, p in cluster.procs.items():
        assert p.poll() is None, f"{name} died"
    # the fuzzing may have added a node "fuzz" and a model "fuzz"; serving is intact
    assert probs(infer_raw(stub(cluster.serve[0]), x[:2])).shape == (2, 10)
