"""End to end: a model with sparse embedding tables served over KServe v2 (issue 7,
item 3). A real local cluster (coordinator, 2 shards, a serving replica) on loopback
ports; a small recommender uploaded with psctl: ids inputs `user` INT64 [-1, 1] and
`items` INT64 [-1, 6], tables `user_emb` and `item_emb` (dim 8), layers
embedding_bag(user, sum) -> embedding_bag(items, mean) -> concat -> dense + sigmoid.
Only the dense weights are uploaded; the rows come from the shards' deterministic
initializer (or a PushRows ASSIGN made here), and the replica reads them at inference
time. Served scores are compared with a numpy forward pass over rows read back with
PullRows from the shards: padding (-1), repeated ids, a sample whose items are all
padding (mean: zeros). Bad requests (FP32 where INT64 is due, ids that do not match
the shape) get clear INVALID_ARGUMENT, and shards that cannot be reached a clear
UNAVAILABLE, while the replica stays up.

Rows are routed here without the ring's hash: a shard refuses a row it does not own
(it is not the primary), so each row is asked of every shard on the ring until its
owner answers."""
import json
import pathlib
import signal
import struct
import tempfile

import grpc
import numpy as np
import pytest

import coordinator_pb2 as cpb
import inference_pb2 as pb
import ps_pb2 as ppb
import ps_pb2_grpc as ppb_grpc
from serve_cluster import PSCTL, Cluster, poll, stub, wait_ready

MODEL = "ctr_tables"
ITEMS = 6
DIM = 8
TABLES = [
    {"name": "user_emb", "dim": DIM, "seed": 7, "init": {"type": "normal", "scale": 0.5},
     "optimizer": {"type": "adagrad", "lr": 0.05}},
    {"name": "item_emb", "dim": DIM, "seed": 11, "init": {"type": "uniform", "scale": 0.8}},
]
CONFIG = {
    "name": MODEL, "max_batch_size": 16,
    "inputs": [{"name": "user", "datatype": "INT64", "shape": [-1, 1]},
               {"name": "items", "datatype": "INT64", "shape": [-1, ITEMS]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
    "tables": TABLES,
    "layers": [
        {"op": "embedding_bag", "input": "user", "output": "u", "table": "user_emb", "mode": "sum"},
        {"op": "embedding_bag", "input": "items", "output": "it", "table": "item_emb",
         "mode": "mean"},
        {"op": "concat", "inputs": ["u", "it"], "output": "h"},
        {"op": "dense", "input": "h", "output": "hidden", "weight": "fc1.weight",
         "bias": "fc1.bias", "activation": "relu"},
        {"op": "dense", "input": "hidden", "output": "score", "weight": "fc2.weight",
         "bias": "fc2.bias", "activation": "sigmoid"},
    ],
}
SPECS = {  # what the replica sends: train_config's reading of TABLES
    "user_emb": ppb.TableSpec(dim=DIM, init=ppb.INIT_NORMAL, init_scale=0.5, seed=7,
                              optimizer=ppb.OPT_ADAGRAD),
    "item_emb": ppb.TableSpec(dim=DIM, init=ppb.INIT_UNIFORM, init_scale=0.8, seed=11),
}


def write_safetensors(path, tensors):
    """{name: float32 array} as a safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def weights():
    rng = np.random.default_rng(3)
    return {"fc1.weight": rng.standard_normal((5, 2 * DIM)).astype(np.float32) * 0.5,
            "fc1.bias": rng.standard_normal(5).astype(np.float32) * 0.1,
            "fc2.weight": rng.standard_normal((1, 5)).astype(np.float32),
            "fc2.bias": np.array([0.2], dtype=np.float32)}


def make_model(root):
    d = root / MODEL
    (d / "1").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(CONFIG))
    write_safetensors(d / "1" / "model.safetensors", weights())
    return d


# ------------------------------------------------------------------ rows ---

def shards(cluster):
    """(ring epoch, addresses of the shards on the ring)."""
    get = grpc.insecure_channel(cluster.coordinator).unary_unary(
        "/ps.Coordinator/GetRing", request_serializer=None, response_deserializer=None)
    ring = cpb.Ring.FromString(get(b"", timeout=5))
    return ring.epoch, [n.addr for n in ring.nodes if n.in_ring and n.role == cpb.ROLE_SHARD]


def row_call(cluster, method, table, row_id, **fields):
    """Sends a one-row PullRows or PushRows to the shard that owns the row."""
    epoch, addrs = shards(cluster)
    refused = []
    for addr in addrs:
        ps = ppb_grpc.ParameterServerStub(grpc.insecure_channel(addr))
        req_type = ppb.PullRowsRequest if method == "PullRows" else ppb.PushRowsRequest
        req = req_type(epoch=epoch, model=MODEL, table=table, spec=SPECS[table], ids=[row_id],
                       **fields)
        try:
            return getattr(ps, method)(req, timeout=10)
        except grpc.RpcError as e:
            refused.append(f"{addr}: {e.code()} {e.details()}")
    raise AssertionError(f"no shard owns row {row_id} of {table}: {refused}")


def pull_rows(cluster, table, ids):
    """{id: row} as the shards hold them now (PullRows)."""
    out = {}
    for i in sorted({int(i) for i in np.ravel(ids) if i >= 0}):
        resp = row_call(cluster, "PullRows", table, i)
        out[i] = np.frombuffer(resp.values, dtype="<f4").copy()
        assert out[i].shape == (DIM,)
    return out


def assign_row(cluster, table, row_id, values):
    row_call(cluster, "PushRows", table, row_id, op=ppb.PUSH_ASSIGN,
             values=np.asarray(values, dtype="<f4").tobytes())


# ------------------------------------------------------------------ numpy ---

def bag(ids, rows, mode):
    """embedding_bag in float64: per sample, the sum (or mean) of its rows, padding skipped."""
    out = np.zeros((ids.shape[0], DIM))
    for b, sample in enumerate(ids):
        picked = [rows[int(i)].astype(np.float64) for i in sample if i >= 0]
        if picked:
            out[b] = np.sum(picked, axis=0) / (len(picked) if mode == "mean" else 1)
    return out


def forward(user, items, user_rows, item_rows):
    w = weights()
    h = np.concatenate([bag(user, user_rows, "sum"), bag(items, item_rows, "mean")], axis=1)
    hidden = np.maximum(h @ w["fc1.weight"].T.astype(np.float64) + w["fc1.bias"], 0.0)
    z = hidden @ w["fc2.weight"].T.astype(np.float64) + w["fc2.bias"]
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


# ------------------------------------------------------------------ KServe ---

def infer_request(user, items, user_type="INT64", items_type="INT64", items_raw=None):
    """A ModelInfer with raw contents, as tritonclient sends them."""
    req = pb.ModelInferRequest(model_name=MODEL, id="tables-1")
    req.inputs.add(name="user", datatype=user_type, shape=list(user.shape))
    req.inputs.add(name="items", datatype=items_type, shape=list(items.shape))
    req.raw_input_contents.append(np.ascontiguousarray(user, dtype="<i8").tobytes())
    req.raw_input_contents.append(items_raw if items_raw is not None
                                  else np.ascontiguousarray(items, dtype="<i8").tobytes())
    return req


def scores(resp):
    assert resp.outputs[0].name == "score" and resp.outputs[0].datatype == "FP32"
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(list(resp.outputs[0].shape))


USER = np.array([[3], [41], [3], [-1], [1000000007]], dtype=np.int64)
ITEMS_IDS = np.array([[1, 2, 2, -1, 9, 1],
                      [-1, -1, -1, -1, -1, -1],  # all padding: the mean is zeros
                      [77, 5, -1, -1, -1, 2],
                      [8, -1, 8, -1, 8, -1],
                      [123456789012, 3, 4, 5, 6, 7]], dtype=np.int64)


@pytest.fixture(scope="module")
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(tmp, shards=2, replicas=1)
        try:
            c.psctl("model", "upload", str(make_model(pathlib.Path(tmp))))
            wait_ready(c.serve[0], MODEL)
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


def check_against_shards(cluster, s, user, items):
    resp = s.ModelInfer(infer_request(user, items), timeout=20)
    assert resp.model_name == MODEL and resp.model_version == "1"
    got = scores(resp)
    want = forward(user, items, pull_rows(cluster, "user_emb", user),
                   pull_rows(cluster, "item_emb", items))
    assert got.shape == (len(user), 1)
    assert np.max(np.abs(got - want)) <= 1e-5, (got, want)
    return got


def test_scores_match_numpy_with_rows_from_the_shards(cluster):
    s = stub(cluster.serve[0])
    got = check_against_shards(cluster, s, USER, ITEMS_IDS)
    assert len(np.unique(np.round(got, 6))) > 2  # the rows really differ per sample
    rows = pull_rows(cluster, "user_emb", USER)
    assert all(np.any(r != 0) for r in rows.values())  # initialized, not zeros
    # every batch size up to max_batch_size, one sample at a time too
    for i in range(len(USER)):
        check_against_shards(cluster, s, USER[i:i + 1], ITEMS_IDS[i:i + 1])
    big_user = np.arange(16, dtype=np.int64).reshape(16, 1) * 13
    big_items = (np.arange(16 * ITEMS, dtype=np.int64).reshape(16, ITEMS) * 7) % 50 - 5
    check_against_shards(cluster, s, big_user, big_items)


def test_assigned_rows_are_served_at_once(cluster):
    """Rows are read at inference time: a PushRows ASSIGN shows in the next answer."""
    s = stub(cluster.serve[0])
    before = check_against_shards(cluster, s, USER, ITEMS_IDS)
    assign_row(cluster, "user_emb", 3, np.linspace(-2, 2, DIM))
    assign_row(cluster, "item_emb", 2, np.full(DIM, 1.5))
    after = check_against_shards(cluster, s, USER, ITEMS_IDS)
    assert np.max(np.abs(after - before)) > 1e-3
    assert np.allclose(pull_rows(cluster, "item_emb", [2])[2], 1.5)


def test_metadata_and_config_say_int64(cluster):
    s = stub(cluster.serve[0])
    md = s.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("user", "INT64", [-1, 1]), ("items", "INT64", [-1, ITEMS])]
    assert [(t.name, t.datatype) for t in md.outputs] == [("score", "FP32")]
    cfg = s.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=10).config
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("user", pb.TYPE_INT64, [1]), ("items", pb.TYPE_INT64, [ITEMS])]
    assert cfg.output[0].data_type == pb.TYPE_FP32


def test_typed_int64_contents(cluster):
    s = stub(cluster.serve[0])
    req = pb.ModelInferRequest(model_name=MODEL, model_version="1")
    u = req.inputs.add(name="user", datatype="INT64", shape=[2, 1])
    u.contents.int64_contents.extend([3, 41])
    it = req.inputs.add(name="items", datatype="INT64", shape=[2, ITEMS])
    it.contents.int64_contents.extend(ITEMS_IDS[:2].ravel().tolist())
    typed = scores(s.ModelInfer(req, timeout=20))
    raw = scores(s.ModelInfer(infer_request(USER[:2], ITEMS_IDS[:2]), timeout=20))
    assert np.array_equal(typed, raw)


def expect_error(code, fn, *words):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() == code, e.value.details()
    for w in words:
        assert w in e.value.details(), e.value.details()


def test_bad_requests_get_clear_errors(cluster):
    s = stub(cluster.serve[0])
    IA = grpc.StatusCode.INVALID_ARGUMENT
    as_floats = np.ascontiguousarray(ITEMS_IDS[:1], dtype="<f4")
    expect_error(IA, lambda: s.ModelInfer(infer_request(
        USER[:1], ITEMS_IDS[:1], items_type="FP32", items_raw=as_floats.tobytes()), timeout=10),
        "input 'items'", "datatype FP32, expected INT64")
    # the datatype claimed right, the ids sent as 4-byte values: the count gives it away
    expect_error(IA, lambda: s.ModelInfer(infer_request(
        USER[:1], ITEMS_IDS[:1], items_raw=as_floats.tobytes()), timeout=10),
        "24 bytes of raw content, expected 48", "INT64")
    short = np.ascontiguousarray(ITEMS_IDS[:1, :5], dtype="<i8").tobytes()
    expect_error(IA, lambda: s.ModelInfer(infer_request(USER[:1], ITEMS_IDS[:1], items_raw=short),
                                          timeout=10), "40 bytes of raw content, expected 48")
    expect_error(IA, lambda: s.ModelInfer(infer_request(USER[:1], ITEMS_IDS[:1, :5]), timeout=10),
                 "shape [1,5], expected [-1,6]")
    expect_error(IA, lambda: s.ModelInfer(infer_request(
        np.zeros((17, 1), np.int64), np.zeros((17, ITEMS), np.int64)), timeout=10),
        "max_batch_size 16")
    req = pb.ModelInferRequest(model_name=MODEL)
    bad = req.inputs.add(name="user", datatype="INT64", shape=[1, 1])
    bad.contents.fp32_contents.append(3.0)
    req.inputs.add(name="items", datatype="INT64", shape=[1, ITEMS]).contents.int64_contents.extend(
        [1] * ITEMS)
    expect_error(IA, lambda: s.ModelInfer(req, timeout=10), "give int64_contents")
    # still serving, and nothing died
    check_against_shards(cluster, s, USER, ITEMS_IDS)
    for name, p in cluster.procs.items():
        assert p.poll() is None, f"{name} died"


def test_unreachable_shards_are_unavailable(tmp_path):
    """Every shard down: inference fails UNAVAILABLE, saying why, the replica stays up;
    once a shard is back (rows created anew from the same initializer) the same scores
    come back."""
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    c = Cluster(tmp_path / "c", shards=1, replicas=1)
    try:
        c.psctl("model", "upload", str(make_model(tmp_path)))
        wait_ready(c.serve[0], MODEL)
        s = stub(c.serve[0])
        before = scores(s.ModelInfer(infer_request(USER, ITEMS_IDS), timeout=20))
        c.procs["shard-1"].send_signal(signal.SIGKILL)
        c.procs["shard-1"].wait(timeout=20)
        expect_error(grpc.StatusCode.UNAVAILABLE,
                     lambda: s.ModelInfer(infer_request(USER, ITEMS_IDS), timeout=30),
                     "embedding_bag of table \"user_emb\"", "cannot read rows of table user_emb")
        assert s.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        assert c.procs["serve-1"].poll() is None
        c.start_shard("shard-1", c.ports["shard-1"])

        def answers():
            try:
                return [scores(s.ModelInfer(infer_request(USER, ITEMS_IDS), timeout=20))]
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e.details()
                return None

        after = poll(answers, "the replica never served again after the shard came back", 30,
                     0.2)[0]
        assert np.max(np.abs(after - before)) <= 1e-6
    finally:
        bad = c.stop()
    assert not bad, "\n".join(bad)
