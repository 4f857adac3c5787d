"""Hostile clients and a hostile shard against ps-serve (real processes on loopback).

Requests: every KServe method gets huge repeated-field counts, long names and messages
near the 64 MiB limit. Each call must end with a clear status (never a crash, a hang
or UNAVAILABLE), the counts over a named limit with INVALID_ARGUMENT saying so, and
the replica must keep serving correct answers.

Shard: a FakeShard (serve_cluster.py) whose update stream goes silent while it keeps
accepting pushes. The replica must notice (no message, keepalives included, for 3 s),
subscribe again and catch up, so served outputs follow the push."""
import json
import tempfile

import grpc
import numpy as np
import pytest

import inference_pb2 as pb
import modelref
from serve_cluster import (BIG, MODEL_DIR, PSCTL, Cluster, FakeShard, poll, wait_outputs,
                           wait_ready)

SVC = "/inference.GRPCInferenceService/"
MIB = 1 << 20
NEAR_LIMIT = 63 * MIB  # under the replica's 64 MiB message limit, with room for framing
OK_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(tmp, shards=1, replicas=1)
        try:
            c.psctl("model", "upload", str(MODEL_DIR))
            wait_ready(c.serve[0])
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def x():
    """Four held-out digits."""
    return np.array(json.loads((MODEL_DIR / "heldout.json").read_text())["pixels"][:4],
                    dtype=np.float32)


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def bytes_field(number, data):
    """One length-delimited protobuf field (unknown to the receiver unless it knows it)."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def call(cluster, method, payload):
    """Sends raw bytes to a method; returns (code, details)."""
    fn = grpc.insecure_channel(cluster.serve[0], options=BIG).unary_unary(
        SVC + method, request_serializer=None, response_deserializer=None)
    try:
        fn(payload, timeout=60)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def still_serving(cluster, x):
    for name, p in cluster.procs.items():
        assert p.poll() is None, f"{name} died:\n{cluster.log(name)[-3000:]}"
    config, params = modelref.load_model(MODEL_DIR)
    want = modelref.forward(config, params, {"pixels": x})["probabilities"]
    wait_outputs(cluster.serve[0], x, want, "wrong answers after hostile requests", timeout=5)


def infer_req(x, **kw):
    req = pb.ModelInferRequest(model_name="digits_mlp", **kw)
    req.inputs.add(name="pixels", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
    return req


def test_huge_counts_in_model_infer(cluster, x):
    cases = []
    r = infer_req(x)
    for _ in range(50000):
        r.outputs.add(name="probabilities")
    cases.append(("50000 requested outputs", r, "requested outputs"))
    r = pb.ModelInferRequest(model_name="digits_mlp")
    for _ in range(150000):  # empty inputs: about 300 KB
        r.inputs.add()
    cases.append(("150000 empty inputs", r, "inputs"))
    r = infer_req(x)
    r.raw_input_contents.extend([b""] * 100000)
    cases.append(("100000 raw contents", r, "raw_input_contents"))
    r = infer_req(x)
    r.inputs[0].shape.extend([1] * 100000)
    cases.append(("100000 dims", r, "dimensions"))
    r = infer_req(x)
    for i in range(100000):
        r.parameters[f"p{i}"].int64_param = i
    cases.append(("100000 parameters", r, "parameters"))
    r = infer_req(x)
    for i in range(100000):
        r.inputs[0].parameters[f"p{i}"].bool_param = True
    cases.append(("100000 input parameters", r, "parameters"))
    r = infer_req(x)
    o = r.outputs.add(name="probabilities")
    for i in range(100000):
        o.parameters[f"p{i}"].bool_param = True
    cases.append(("100000 output parameters", r, "parameters"))
    for what, req, word in cases:
        code, details = call(cluster, "ModelInfer", req.SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {code} {details}"
        assert word in details and "at most" in details, f"{what}: {details}"
    still_serving(cluster, x)


def test_long_names_in_every_method(cluster, x):
    name = "n" * MIB
    cases = [
        ("ModelReady", pb.ModelReadyRequest(name=name)),
        ("ModelReady", pb.ModelReadyRequest(name="digits_mlp", version=name)),
        ("ModelMetadata", pb.ModelMetadataRequest(name=name)),
        ("ModelMetadata", pb.ModelMetadataRequest(name="digits_mlp", version=name)),
        ("ModelConfig", pb.ModelConfigRequest(name=name)),
        ("ModelStatistics", pb.ModelStatisticsRequest(name=name)),
        ("ModelInfer", infer_req(x, id=name)),
        ("ModelInfer", pb.ModelInferRequest(model_name=name)),
    ]
    r = infer_req(x)
    r.inputs[0].name = name
    cases.append(("ModelInfer", r))
    r = infer_req(x)
    r.inputs[0].datatype = name
    cases.append(("ModelInfer", r))
    r = infer_req(x)
    r.outputs.add(name=name)
    cases.append(("ModelInfer", r))
    r = infer_req(x)
    r.parameters["k"].string_param = name
    cases.append(("ModelInfer", r))
    for method, req in cases:
        code, details = call(cluster, method, req.SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{method}: {code} {details}"
        assert "bytes" in details and "at most" in details, f"{method}: {details}"
        assert len(details) < 1000, f"{method}: the name was echoed back whole"
    still_serving(cluster, x)


def test_messages_near_the_size_limit(cluster, x):
    big = "m" * NEAR_LIMIT
    cases = [(m, bytes_field(99, b"u" * NEAR_LIMIT))  # an unknown field
             for m in ("ServerLive", "ServerReady", "ServerMetadata")]
    cases += [
        ("ModelReady", pb.ModelReadyRequest(name=big).SerializeToString()),
        ("ModelMetadata", pb.ModelMetadataRequest(name=big).SerializeToString()),
        ("ModelConfig", pb.ModelConfigRequest(name=big).SerializeToString()),
        ("ModelStatistics", pb.ModelStatisticsRequest(name=big).SerializeToString()),
        ("ModelInfer", pb.ModelInferRequest(model_name=big).SerializeToString()),
    ]
    req = infer_req(x[:1])
    req.raw_input_contents[0] = b"\0" * NEAR_LIMIT
    cases.append(("ModelInfer", req.SerializeToString()))
    req = pb.ModelInferRequest(model_name="digits_mlp")
    inp = req.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    inp.contents.fp32_contents.extend(np.zeros(NEAR_LIMIT // 4 - 64, dtype=np.float32))
    cases.append(("ModelInfer", req.SerializeToString()))
    cases.append(("ModelInfer", bytes_field(7, b"\0" * (64 * MIB + 16))))  # over the limit
    for method, payload in cases:
        code, details = call(cluster, method, payload)
        if method.startswith("Server"):  # unknown fields are ignored
            assert code in OK_CODES | {grpc.StatusCode.OK}, f"{method}: {code} {details}"
        else:
            assert code in OK_CODES, f"{method} ({len(payload)} bytes): {code} {details}"
    still_serving(cluster, x)


def test_stalled_update_stream_is_noticed(tmp_path, x):
    """The shard's stream goes silent (no updates, no keepalives) while the shard keeps
    accepting pushes: the replica must subscribe again within a few seconds and serve
    the pushed values."""
    c = Cluster(tmp_path, shards=0, replicas=0)
    fake = FakeShard(c.coordinator)
    try:
        addr = c.start_replica("serve-1")
        c.psctl("model", "upload", str(MODEL_DIR))
        wait_ready(addr)
        config, params = modelref.load_model(MODEL_DIR)
        wait_outputs(addr, x, modelref.forward(config, params, {"pixels": x})["probabilities"],
                     "wrong outputs after upload")
        poll(lambda: fake.subscribes >= 1, "the replica never subscribed")
        subscribes = fake.subscribes
        before = modelref.forward(config, params, {"pixels": x})["probabilities"]
        fake.stall()
        delta = np.full(10, -8.0, dtype="<f4")
        delta[0] = 8.0
        c.push("digits_mlp", "fc2.bias", delta)
        params["fc2.bias"] = params["fc2.bias"] + delta
        want = modelref.forward(config, params, {"pixels": x})["probabilities"]
        assert np.max(np.abs(want - before)) > 0.1  # the push really changes the answers
        wait_outputs(addr, x, want, "never caught up after its stream stalled", timeout=20)
        poll(lambda: fake.subscribes > subscribes, "the replica never subscribed again")
        log = c.log("serve-1")
        assert "sent nothing, not even a keepalive, for 3000 ms" in log, log[-3000:]
        assert log.count("sent nothing") == 1, log[-3000:]  # keepalives kept the new stream up
    finally:
        bad = c.stop()
        fake.stop()
    assert not bad, "\n".join(bad)


def register_model(cluster, name, hidden, max_batch=8):
    """RegisterModel straight to the coordinator: any client can write the registry."""
    import coordinator_pb2 as cpb
    cfg = {"name": name, "max_batch_size": max_batch,
           "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
           "layers": [{"op": "dense", "input": "x", "output": "h", "weight": "w1", "bias": "b1",
                       "activation": "relu"},
                      {"op": "dense", "input": "h", "output": "logits", "weight": "w2",
                       "bias": "b2"},
                      {"op": "softmax", "input": "logits", "output": "y"}]}
    chunk = 4 << 20

    def tensor(n, shape):
        count = int(np.prod(shape, dtype=object))
        return cpb.TensorInfo(name=n, dtype="FP32", shape=shape, chunk_floats=chunk,
                              chunks=-(-count // chunk))

    req = cpb.RegisterModelRequest(model=cpb.ModelInfo(
        name=name, config_json=json.dumps(cfg),
        tensors=[tensor("w1", [hidden, 4]), tensor("b1", [hidden]), tensor("w2", [3, hidden]),
                 tensor("b2", [3])]))
    fn = grpc.insecure_channel(cluster.coordinator, options=BIG).unary_unary(
        "/ps.Coordinator/RegisterModel", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=cpb.RegisterModelResponse.FromString)
    try:
        fn(req, timeout=30)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def test_registry_refuses_models_no_replica_can_hold(cluster, x):
    """The coordinator and the replicas agree on sizes (the model-file library checks
    both): a parameter over 2^31-1 elements, or a batch whose values would be, is refused
    at registration, so no replica ever tries to allocate it."""
    code, details = register_model(cluster, "toobig", hidden=2**31 - 1)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "elements" in details, details
    code, details = register_model(cluster, "toowide", hidden=2**28, max_batch=2**31 - 1)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_size" in details, details
    still_serving(cluster, x)


def test_replica_memory_quota(cluster, x):
    """A registry entry within the limits but bigger than a replica's --max-model-mb is
    not loaded (no allocation, a clear log line), and the replica keeps serving the
    models it holds."""
    port = cluster.start("serve-small", [cluster_bin("serving", "ps-serve"), "--id", "serve-small",
                                         "--coordinator", cluster.coordinator,
                                         "--max-model-mb", "4"])
    addr = f"127.0.0.1:{port}"
    wait_ready(addr)  # digits_mlp (19 KiB) fits
    code, details = register_model(cluster, "bigger", hidden=1 << 19)  # 16 MiB of parameters
    assert code == grpc.StatusCode.OK, details
    poll(lambda: "model bigger version 1 needs 16 MiB of parameters" in cluster.log("serve-small"),
         "serve-small never said why it does not load 'bigger'")
    log = cluster.log("serve-small")
    assert "of its 4 MiB (--max-model-mb): not loaded" in log, log[-2000:]
    assert cluster.procs["serve-small"].poll() is None
    config, params = modelref.load_model(MODEL_DIR)
    want = modelref.forward(config, params, {"pixels": x})["probabilities"]
    wait_outputs(addr, x, want, "serve-small stopped serving digits_mlp", timeout=5)


def cluster_bin(folder, name):
    from conftest import BUILD
    return BUILD / folder / name
