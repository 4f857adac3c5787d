"""End to end: a BERT sentence encoder served over KServe v2 (issue 9 items 4 and 6).

A real local cluster (coordinator, 2 shards, 1 serving replica) on loopback ports; a
tiny random BERT-like model (2 layers, hidden 8, 2 heads, vocab 11, 6 tokens, GELU
feed-forward, then mean pooling with the attention mask and L2 normalisation) written
with numpy in the exporter's config.json syntax (embedding, position_embedding,
attention, mean_pool, l2_normalize) and uploaded with psctl. Requests carry INT64
input_ids and attention_mask (raw contents, as tritonclient sends them, and typed
int64_contents), a batch with padding; the served embeddings are compared with a
float64 numpy forward pass written here (atol 1e-4). An id outside the vocabulary
gets INVALID_ARGUMENT naming the input and the id, a mask sent as FP32 gets
INVALID_ARGUMENT, and the replica keeps serving.

On code without the sequence ops psctl refuses the config (unknown op "embedding"),
so every test here fails there."""
import sys

import grpc
import numpy as np
import pytest

import inference_pb2 as pb
from conftest import SOURCE
from serve_cluster import output, serving, stub

sys.path.insert(0, str(SOURCE / "scripts"))
from train_common import write_model  # noqa: E402

MODEL = "tiny_bert"
LAYERS, HID, HEADS, VOCAB, SEQ, POS, FF = 2, 8, 2, 11, 6, 8, 16
EPS = 1e-12


def config():
    layers = [
        {"op": "embedding", "input": "input_ids", "weight": "word", "output": "we"},
        {"op": "position_embedding", "input": "we", "weight": "pos", "output": "wp"},
        {"op": "scale", "input": "wp", "shift": "tt", "output": "wt"},
        {"op": "layernorm", "input": "wt", "weight": "e.ln.w", "bias": "e.ln.b", "eps": EPS,
         "output": "h0"},
    ]
    for i in range(LAYERS):
        p, h = f"l{i}.", f"h{i}"
        for t in "qkv":
            layers.append({"op": "dense", "input": h, "weight": p + t + ".w", "bias": p + t + ".b",
                           "output": p + t})
        layers += [
            {"op": "attention", "inputs": [p + "q", p + "k", p + "v"], "heads": HEADS,
             "mask": "attention_mask", "output": p + "ctx"},
            {"op": "dense", "input": p + "ctx", "weight": p + "o.w", "bias": p + "o.b",
             "output": p + "ao"},
            {"op": "add", "inputs": [p + "ao", h], "output": p + "ar"},
            {"op": "layernorm", "input": p + "ar", "weight": p + "ln1.w", "bias": p + "ln1.b",
             "eps": EPS, "output": p + "h1"},
            {"op": "dense", "input": p + "h1", "weight": p + "i.w", "bias": p + "i.b",
             "activation": "gelu", "output": p + "ff"},
            {"op": "dense", "input": p + "ff", "weight": p + "f.w", "bias": p + "f.b",
             "output": p + "fo"},
            {"op": "add", "inputs": [p + "fo", p + "h1"], "output": p + "fr"},
            {"op": "layernorm", "input": p + "fr", "weight": p + "ln2.w", "bias": p + "ln2.b",
             "eps": EPS, "output": f"h{i + 1}"},
        ]
    layers += [
        {"op": "mean_pool", "input": f"h{LAYERS}", "mask": "attention_mask", "output": "pooled"},
        {"op": "l2_normalize", "input": "pooled", "output": "embedding"},
    ]
    return {
        "name": MODEL, "max_batch_size": 8,
        "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, SEQ]},
                   {"name": "attention_mask", "datatype": "INT64", "shape": [-1, SEQ]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, HID]}],
        "layers": layers,
    }


def params():
    rng = np.random.default_rng(9)

    def r(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    out = {"word": r(VOCAB, HID), "pos": r(POS, HID), "tt": r(HID),
           "e.ln.w": 1 + r(HID, scale=0.1), "e.ln.b": r(HID, scale=0.1)}
    for i in range(LAYERS):
        p = f"l{i}."
        for t in "qkvo":
            out[p + t + ".w"], out[p + t + ".b"] = r(HID, HID), r(HID, scale=0.1)
        out[p + "i.w"], out[p + "i.b"] = r(FF, HID), r(FF, scale=0.1)
        out[p + "f.w"], out[p + "f.b"] = r(HID, FF), r(HID, scale=0.1)
        for n in ("ln1", "ln2"):
            out[p + n + ".w"], out[p + n + ".b"] = 1 + r(HID, scale=0.1), r(HID, scale=0.1)
    return out


# ------------------------------------------------------------------ numpy ---

def erf(x):
    return np.vectorize(__import__("math").erf)(x)


def layernorm(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w + b


def forward(p, ids, mask):
    """The sentence embeddings [batch, HID] in float64."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    m = (mask != 0).astype(np.float64)
    h = p["word"][ids] + p["pos"][:SEQ] + p["tt"]
    h = layernorm(h, p["e.ln.w"], p["e.ln.b"])
    d = HID // HEADS
    for i in range(LAYERS):
        pre = f"l{i}."

        def lin(x, t):
            return x @ p[pre + t + ".w"].T + p[pre + t + ".b"]

        q, k, v = (lin(h, t).reshape(len(ids), SEQ, HEADS, d).transpose(0, 2, 1, 3) for t in "qkv")
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
        s = np.where(m[:, None, None, :] != 0, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(len(ids), SEQ, HID)
        h1 = layernorm(lin(ctx, "o") + h, p[pre + "ln1.w"], p[pre + "ln1.b"])
        f = lin(h1, "i")
        f = 0.5 * f * (1 + erf(f / np.sqrt(2)))
        h = layernorm(lin(f, "f") + h1, p[pre + "ln2.w"], p[pre + "ln2.b"])
    pooled = (h * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), EPS)


# ------------------------------------------------------------------ KServe ---

# Batch 4: full, right padding (id 0 under mask 0), one token, a mask value of 2.
IDS = np.array([[1, 4, 9, 10, 2, 3],
                [3, 3, 5, 0, 0, 0],
                [7, 0, 0, 0, 0, 0],
                [6, 8, 1, 2, 0, 0]], dtype=np.int64)
MASK = np.array([[1, 1, 1, 1, 1, 1],
                 [1, 1, 1, 0, 0, 0],
                 [1, 0, 0, 0, 0, 0],
                 [1, 2, 1, 1, 0, 0]], dtype=np.int64)


def request(ids, mask, typed=False, mask_type="INT64"):
    req = pb.ModelInferRequest(model_name=MODEL, id="bert-1")
    a = req.inputs.add(name="input_ids", datatype="INT64", shape=list(ids.shape))
    b = req.inputs.add(name="attention_mask", datatype=mask_type, shape=list(mask.shape))
    if typed:
        a.contents.int64_contents.extend(ids.ravel().tolist())
        b.contents.int64_contents.extend(mask.ravel().tolist())
    else:
        req.raw_input_contents.append(np.ascontiguousarray(ids, dtype="<i8").tobytes())
        req.raw_input_contents.append(
            np.ascontiguousarray(mask, dtype="<i8" if mask_type == "INT64" else "<f4").tobytes())
    return req


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with serving([write_model(tmp_path_factory.mktemp("bert"), config(), params())]) as c:
        yield c


def test_embeddings_match_numpy(cluster):
    s = stub(cluster.serve[0])
    want = forward(params(), IDS, MASK)
    for typed in (False, True):
        resp = s.ModelInfer(request(IDS, MASK, typed=typed), timeout=20)
        assert resp.outputs[0].name == "embedding" and resp.outputs[0].datatype == "FP32"
        got = output(resp)
        assert got.shape == (4, HID)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one sample alone gets what it got in the batch
    got = output(s.ModelInfer(request(IDS[1:2], MASK[1:2]), timeout=20))
    np.testing.assert_allclose(got, want[1:2], atol=1e-4, rtol=0)


def test_hostile_requests_then_still_serving(cluster):
    s = stub(cluster.serve[0])
    for bad_id in (VOCAB, -5, 2 ** 63 - 1):
        ids = IDS.copy()
        ids[2, 0] = bad_id
        with pytest.raises(grpc.RpcError) as e:
            s.ModelInfer(request(ids, MASK), timeout=20)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input_ids" in e.value.details() and str(bad_id) in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        s.ModelInfer(request(IDS, MASK.astype(np.float32), mask_type="FP32"), timeout=20)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "attention_mask" in e.value.details()
    got = output(s.ModelInfer(request(IDS, MASK), timeout=20))
    np.testing.assert_allclose(got, forward(params(), IDS, MASK), atol=1e-4, rtol=0)
