"""End to end: two models made with PyTorch and exported with scripts/export_model.py
(issue 9, items 5 and 6), served by a real local cluster (coordinator, 2 shards, a
serving replica) over KServe v2 gRPC and checked against PyTorch's own outputs, which
the fixtures hold (the tests need no torch):

- tests/fixtures/digits_cnn (scripts/fixtures/make_digits_cnn.py): a CNN trained on
  sklearn's digits (reshape, conv2d + relu, maxpool2d, conv2d + relu, avgpool2d,
  flatten, dense, softmax). The 360 held-out images must get PyTorch's probabilities
  within TOL and the same accuracy.
- tests/fixtures/dlrm (scripts/fixtures/make_dlrm.py): a DLRM-style recommender, a
  bottom MLP over dense features, three embedding bags (sum, mean, sum) over tables on
  the parameter servers, concat, a top MLP and a sigmoid. Its dense weights are
  uploaded with psctl, its table rows pushed into the shards (PushRows ASSIGN, as
  test_serve_tables.py does), and its scores must match PyTorch's within TOL, padding
  ids and an all-padding bag included.

Both stay updatable through the parameter servers: a known change pushed to a dense
weight (psctl push --add) or to a table row (an SGD step through psclient) must show in
the served outputs as a numpy forward pass with the changed parameters predicts. The
numpy forward passes here (float64) are first checked against PyTorch's outputs.
"""
import sys

import grpc
import numpy as np
import pytest

import coordinator_pb2 as cpb
import inference_pb2 as pb
import modelref
import ps_pb2 as ppb
import ps_pb2_grpc as ppb_grpc
from conftest import SOURCE
from serve_cluster import output, poll, serving, stub

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's psclient
import psclient  # noqa: E402

FIXTURES = SOURCE / "tests" / "fixtures"
CNN_DIR, DLRM_DIR = FIXTURES / "digits_cnn", FIXTURES / "dlrm"
TOL = {"atol": 1e-4, "rtol": 1e-4}  # served float32 vs PyTorch float32 (CPU)
INITS = {"zeros": ppb.INIT_ZEROS, "uniform": ppb.INIT_UNIFORM, "normal": ppb.INIT_NORMAL}
OPTIMIZERS = {None: ppb.OPT_NONE, "sgd": ppb.OPT_SGD, "adagrad": ppb.OPT_ADAGRAD,
              "adam": ppb.OPT_ADAM, "ftrl": ppb.OPT_FTRL}


def assert_close(got, want, what):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    bad = np.abs(got - want) > TOL["atol"] + TOL["rtol"] * np.abs(want)
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} values differ; first at "
                           f"{np.argwhere(bad)[0]}: served {got[bad][0]}, expected {want[bad][0]}")


# ------------------------------------------------------------------ numpy references ---

def conv2d(x, w, b, pad):
    """PyTorch's Conv2d (stride 1, dilation 1, zero padding) on NCHW, float64."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    p, q = xp.shape[2] - w.shape[2] + 1, xp.shape[3] - w.shape[3] + 1
    out = np.zeros((x.shape[0], w.shape[0], p, q))
    for r in range(w.shape[2]):
        for s in range(w.shape[3]):
            out += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + p, s:s + q], w[:, :, r, s])
    return out + b[None, :, None, None]


def pool2(x, reduce):
    n, c, h, w = x.shape
    return reduce(x.reshape(n, c, h // 2, 2, w // 2, 2), axis=(3, 5))


def cnn_forward(params, pixels):
    """The digits CNN (make_digits_cnn.py's graph) in float64; probabilities float32."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = pixels.astype(np.float64).reshape(-1, 1, 8, 8)
    x = pool2(np.maximum(conv2d(x, p["conv1.weight"], p["conv1.bias"], 1), 0), np.max)
    x = pool2(np.maximum(conv2d(x, p["conv2.weight"], p["conv2.bias"], 1), 0), np.mean)
    z = x.reshape(len(x), -1) @ p["fc.weight"].T + p["fc.bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def dlrm_forward(config, params, tables, inputs):
    """The DLRM graph (dense with relu/sigmoid, embedding_bag, concat) in float64."""
    acts = {"relu": lambda z: np.maximum(z, 0.0), "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z))}
    values = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    for layer in config["layers"]:
        op = layer["op"]
        if op == "embedding_bag":
            rows, ids = tables[layer["table"]].astype(np.float64), inputs[layer["input"]]
            y = np.where((ids >= 0)[..., None], rows[np.maximum(ids, 0)], 0.0).sum(axis=1)
            if layer["mode"] == "mean":
                y /= np.maximum((ids >= 0).sum(axis=1), 1)[:, None]
        elif op == "concat":
            y = np.concatenate([values[n] for n in layer["inputs"]], axis=1)
        else:
            assert op == "dense", op
            w, b = (params[layer[f]].astype(np.float64) for f in ("weight", "bias"))
            y = acts[layer["activation"]](values[layer["input"]] @ w.T + b)
        values[layer["output"]] = y
    return values["score"].astype(np.float32)


@pytest.fixture(scope="module")
def cnn():
    config, params = modelref.load_model(CNN_DIR / "model")
    with np.load(CNN_DIR / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    return config, params, ref


@pytest.fixture(scope="module")
def dlrm():
    config, params = modelref.load_model(DLRM_DIR / "model")
    with np.load(DLRM_DIR / "tables.npz") as z:
        tables = {k: z[k] for k in z.files}
    with np.load(DLRM_DIR / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    return config, params, tables, ref


def test_numpy_references_match_pytorch(cnn, dlrm):
    """The fixtures are consistent and the numpy twins used below agree with PyTorch."""
    config, params, ref = cnn
    assert [l["op"] for l in config["layers"]] == [
        "reshape", "conv2d", "maxpool2d", "conv2d", "avgpool2d", "flatten", "dense", "softmax"]
    assert_close(cnn_forward(params, ref["pixels"]), ref["probabilities"], "numpy CNN")
    config, params, tables, ref = dlrm
    inputs = {k: ref[k] for k in ("dense", "user", "items", "context")}
    assert (ref["items"] < 0).any() and (ref["items"] < 0).all(axis=1).any()  # padding is there
    assert_close(dlrm_forward(config, params, tables, inputs), ref["score"], "numpy DLRM")


# ------------------------------------------------------------------ cluster ---

def table_spec(entry):
    """The TableSpec a replica sends for a config.json "tables" entry."""
    return ppb.TableSpec(dim=entry["dim"], init=INITS[entry.get("init", {}).get("type", "zeros")],
                         init_scale=entry.get("init", {}).get("scale", 0.0),
                         seed=entry.get("seed", 0),
                         optimizer=OPTIMIZERS[entry.get("optimizer", {}).get("type")])


def assign_rows(cluster, model, entry, rows):
    """PushRows ASSIGN of rows[i] as id i. A shard refuses a row it does not own, so each
    row goes to every shard on the ring until its owner takes it (test_serve_tables.py)."""
    get = grpc.insecure_channel(cluster.coordinator).unary_unary("/ps.Coordinator/GetRing")
    ring = cpb.Ring.FromString(get(b"", timeout=5))
    stubs = [ppb_grpc.ParameterServerStub(grpc.insecure_channel(n.addr))
             for n in ring.nodes if n.in_ring and n.role == cpb.ROLE_SHARD]
    for i, row in enumerate(rows):
        req = ppb.PushRowsRequest(epoch=ring.epoch, model=model, table=entry["name"],
                                  spec=table_spec(entry), ids=[i], op=ppb.PUSH_ASSIGN,
                                  values=np.ascontiguousarray(row, "<f4").tobytes())
        refused = []
        for s in stubs:
            try:
                s.PushRows(req, timeout=10)
                break
            except grpc.RpcError as e:
                refused.append(f"{e.code()} {e.details()}")
        else:
            raise AssertionError(f"no shard took row {i} of {entry['name']}: {refused}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, dlrm):
    config, _, tables, _ = dlrm

    def load_rows(c):
        for entry in config["tables"]:
            assign_rows(c, "dlrm", entry, tables[entry["name"]])

    with serving([CNN_DIR / "model", DLRM_DIR / "model"], setup=load_rows,
                 tmp=tmp_path_factory.mktemp("real_models")) as c:
        yield c


def infer(addr, model, inputs):
    """ModelInfer with raw contents; the first output as an array."""
    req = pb.ModelInferRequest(model_name=model, id="real-1")
    for name, x in inputs.items():
        dt = "INT64" if x.dtype.kind == "i" else "FP32"
        x = np.ascontiguousarray(x, dtype="<i8" if dt == "INT64" else "<f4")
        req.inputs.add(name=name, datatype=dt, shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
    return output(stub(addr).ModelInfer(req, timeout=20))


def cnn_served(cluster, pixels):
    return np.concatenate([infer(cluster.serve[0], "digits_cnn",
                                 {"pixels": pixels[i:i + 64].astype(np.float32)})
                           for i in range(0, len(pixels), 64)])


def wait_close(fn, want, what):
    """Polls fn() until it is within TOL of want (then checks once more, to show why)."""
    def close():
        got = fn()
        return np.all(np.abs(got - want) <= TOL["atol"] + TOL["rtol"] * np.abs(want))
    poll(close, what, 30, 0.05)
    assert_close(fn(), want, what)


def test_digits_cnn_matches_pytorch(cluster, cnn):
    _, _, ref = cnn
    got = cnn_served(cluster, ref["pixels"])
    assert_close(got, ref["probabilities"], "served digits_cnn vs PyTorch")
    accuracy = np.mean(got.argmax(axis=1) == ref["labels"])
    assert accuracy == pytest.approx(float(ref["accuracy"]), abs=1e-12)
    assert accuracy >= 0.95  # a real classifier, not a constant
    np.testing.assert_array_equal(got.argmax(axis=1), ref["probabilities"].argmax(axis=1))


def test_digits_cnn_follows_a_pushed_conv_weight(cluster, cnn):
    _, params, ref = cnn
    x = ref["pixels"][:64]
    delta = np.zeros_like(params["conv2.weight"])
    delta[5, 3] = np.linspace(-0.4, 0.4, 9, dtype=np.float32).reshape(3, 3)
    delta[11, 0, 1, 1] = 0.75
    changed = dict(params, **{"conv2.weight": params["conv2.weight"] + delta})
    want = cnn_forward(changed, x)
    assert np.max(np.abs(want - ref["probabilities"][:64])) > 1e-3  # it really changes
    cluster.push("digits_cnn", "conv2.weight", delta)
    wait_close(lambda: cnn_served(cluster, x), want, "the replica never applied the conv2 push")
    cluster.push("digits_cnn", "conv2.weight", -delta)  # undo, for the other tests
    wait_close(lambda: cnn_served(cluster, x), ref["probabilities"][:64], "never undone")


def dlrm_inputs(ref):
    return {k: ref[k] for k in ("dense", "user", "items", "context")}


def test_dlrm_matches_pytorch(cluster, dlrm):
    config, _, tables, ref = dlrm
    with psclient.Client(cluster.coordinator) as c:
        for entry in config["tables"]:  # the shards hold the rows pushed
            n = len(tables[entry["name"]])
            np.testing.assert_array_equal(c.pull_rows("dlrm", entry["name"], np.arange(n)),
                                          tables[entry["name"]])
    got = infer(cluster.serve[0], "dlrm", dlrm_inputs(ref))
    assert_close(got, ref["score"], "served dlrm vs PyTorch")
    assert np.ptp(got) > 0.1  # the scores really differ per sample
    for i in (0, 3, 5, len(got) - 1):  # one at a time too (an all-padding bag at 3 and 5)
        one = {k: v[i:i + 1] for k, v in dlrm_inputs(ref).items()}
        assert_close(infer(cluster.serve[0], "dlrm", one), ref["score"][i:i + 1], f"sample {i}")


def test_dlrm_follows_a_row_push_and_a_dense_push(cluster, dlrm):
    config, params, tables, ref = dlrm
    inputs = dlrm_inputs(ref)
    served = lambda: infer(cluster.serve[0], "dlrm", inputs)  # noqa: E731
    entry = next(t for t in config["tables"] if t["name"] == "item_emb")
    lr = entry["optimizer"]["lr"]
    grad = np.linspace(-1.0, 1.0, entry["dim"], dtype=np.float32)
    rows = dict(tables)
    rows["item_emb"] = tables["item_emb"].copy()
    rows["item_emb"][7] = tables["item_emb"][7] - np.float32(lr) * grad  # SGD on the shard
    want = dlrm_forward(config, params, rows, inputs)
    assert np.max(np.abs(want - ref["score"])) > 1e-3
    with psclient.Client(cluster.coordinator) as c:
        c.push_rows("dlrm", "item_emb", [7], grad[None, :])
        np.testing.assert_allclose(c.pull_rows("dlrm", "item_emb", [7])[0], rows["item_emb"][7],
                                   atol=1e-6)
    wait_close(served, want, "the replica never served the pushed row")

    delta = np.array([0.8], dtype=np.float32)
    changed = dict(params, **{"top.2.bias": params["top.2.bias"] + delta})
    want = dlrm_forward(config, changed, rows, inputs)
    cluster.push("dlrm", "top.2.bias", delta)
    wait_close(served, want, "the replica never applied the top.2.bias push")
