"""Model versions served side by side (issue 7: "v1 and v2 served side by side"). A
model whose config.json says "version_policy": {"latest": 2} is served in its two
latest versions at once: a KServe request naming version 1 or 2 is computed by that
version's weights (an update pushed to version 1 changes only its answers), a request
naming none goes to the latest, and when version 3 is registered version 1 is retired
while 2 and 3 are served. A real cluster (coordinator, 2 shards, a replica)."""
import json
import pathlib
import tempfile

import numpy as np

import inference_pb2 as pb
from serve_cluster import Cluster, poll, stub, wait_ready
from test_serve_tables import write_safetensors

MODEL = "sidebyside"
CONFIG = {
    "name": MODEL, "max_batch_size": 4, "version_policy": {"latest": 2},
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "fc.weight",
                "bias": "fc.bias"}],
}
X = np.array([[1, 2, 3], [-1, 0, 0.5]], np.float32)


def weights(v):
    rng = np.random.default_rng(v)
    return {"fc.weight": rng.normal(size=(2, 3)).astype(np.float32),
            "fc.bias": rng.normal(size=2).astype(np.float32)}


def infer(s, version=""):
    req = pb.ModelInferRequest(model_name=MODEL, model_version=version)
    req.inputs.add(name="x", datatype="FP32", shape=list(X.shape))
    req.raw_input_contents.append(X.tobytes())
    r = s.ModelInfer(req, timeout=10)
    return r.model_version, np.frombuffer(r.raw_output_contents[0], np.float32).reshape(2, 2)


def want(w):
    return X @ w["fc.weight"].T + w["fc.bias"]


def ready(s, version):
    return s.ModelReady(pb.ModelReadyRequest(name=MODEL, version=version), timeout=5).ready


def test_two_versions_served_side_by_side():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        c = Cluster(tmp, shards=2, replicas=1)
        try:
            d = tmp / MODEL
            d.mkdir()
            (d / "config.json").write_text(json.dumps(CONFIG))
            for v in (1, 2):
                (d / str(v)).mkdir()
                write_safetensors(d / str(v) / "model.safetensors", weights(v))
                c.psctl("model", "upload", str(d), "--version", str(v))
            s = stub(c.serve[0])
            wait_ready(c.serve[0], MODEL)
            poll(lambda: ready(s, "1") and ready(s, "2"), "versions 1 and 2 both ready")
            for v in (1, 2):
                version, y = infer(s, str(v))
                assert version == str(v)
                np.testing.assert_allclose(y, want(weights(v)), rtol=1e-5, atol=1e-6)
            version, y = infer(s)  # no version named: the latest
            assert version == "2"
            np.testing.assert_allclose(y, want(weights(2)), rtol=1e-5, atol=1e-6)

            # an update of version 1 reaches version 1's answers only
            c.push(MODEL, "fc.bias", np.array([10, 20], np.float32), op="--add")  # latest: 2
            c.psctl("push", MODEL, "fc.bias", "--add", "--values", "100,200", "--version", "1")
            w1, w2 = weights(1), weights(2)
            w1["fc.bias"] = w1["fc.bias"] + np.array([100, 200], np.float32)
            w2["fc.bias"] = w2["fc.bias"] + np.array([10, 20], np.float32)
            poll(lambda: np.allclose(infer(s, "1")[1], want(w1), atol=1e-4), "v1 updated")
            poll(lambda: np.allclose(infer(s, "2")[1], want(w2), atol=1e-4), "v2 updated")

            # version 3: version 1 retires, 2 and 3 are served
            (d / "3").mkdir()
            write_safetensors(d / "3" / "model.safetensors", weights(3))
            c.psctl("model", "upload", str(d), "--version", "3")
            poll(lambda: ready(s, "3") and not ready(s, "1"), "v3 ready and v1 retired")
            assert ready(s, "2")
            np.testing.assert_allclose(infer(s, "3")[1], want(weights(3)), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(infer(s, "2")[1], want(w2), atol=1e-4)
        finally:
            bad = c.stop()
            assert not bad, bad
