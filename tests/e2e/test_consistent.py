"""Consistent propagation end to end (issue 7 item 5): a model whose config.json says
"propagation": "consistent" is served in published cuts. A real cluster (coordinator,
3 shards, 2 replicas); a training worker (psclient) assigns every weight and bias the
value k at its step k, each tensor cut into chunks spread over the shards, while
psctl model publish runs again and again and clients ask both replicas. The model's
output reveals a mix: for inputs 0 and the unit vectors, y0 = b and y(j) = W[:, j] + b,
so an answer computed from one step k reads y0 = k and y(j) = 2k; any other answer
mixes steps. No answer may mix, every answer names its publish, a publish always
computes the same k, and the publishes move forward as training goes on."""
import json
import pathlib
import tempfile
import threading
import time

import numpy as np
import pytest

import inference_pb2 as pb
from serve_cluster import Cluster, poll, stub, wait_ready

import psclient_support  # noqa: F401 - puts this checkout's psclient on sys.path
from psclient_support import psclient

MODEL = "mix"
CONFIG = {
    "name": MODEL, "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "fc.weight",
                "bias": "fc.bias"}],
    "training": {"propagation": "consistent", "optimizer": {"type": "sgd"}},
}
X = np.vstack([np.zeros(4), np.eye(4)]).astype(np.float32)


def upload(c, root, config=CONFIG):
    from test_serve_tables import write_safetensors
    d = root / MODEL
    (d / "1").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    write_safetensors(d / "1" / "model.safetensors",
                      {"fc.weight": np.zeros((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)})
    c.psctl("model", "upload", str(d), "--chunk-floats", "2")


def ask(s):
    """(k, publish) of one answer; k is None when the answer mixes steps."""
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="x", datatype="FP32", shape=list(X.shape))
    req.raw_input_contents.append(X.tobytes())
    r = s.ModelInfer(req, timeout=10)
    y = np.frombuffer(r.raw_output_contents[0], np.float32).reshape(5, 2)
    k = y[0, 0]
    ok = np.all(y[0] == k) and np.all(y[1:] == 2 * k)
    publish = r.parameters["publish"].int64_param if "publish" in r.parameters else None
    return (float(k) if ok else None), publish, y


def test_no_answer_mixes_two_steps():
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(pathlib.Path(tmp), shards=3, replicas=2)
        try:
            upload(c, pathlib.Path(tmp))
            for addr in c.serve:
                wait_ready(addr, MODEL)
            stop = threading.Event()
            errors, seen = [], {}

            def train():
                with psclient.Client(c.coordinator, name="trainer") as pc:
                    k = 0
                    while not stop.is_set():
                        pc.pull(MODEL, "fc.bias")  # between steps: a publish parks it here
                        k += 1
                        pc.assign(MODEL, "fc.weight", np.full((2, 4), k, np.float32))
                        pc.assign(MODEL, "fc.bias", np.full(2, k, np.float32))
                        pc.clock(MODEL)

            def read(addr):
                s = stub(addr)
                while not stop.is_set():
                    k, publish, y = ask(s)
                    if k is None:
                        errors.append(f"{addr}: publish {publish} mixes steps:\n{y}")
                        return
                    if seen.setdefault(publish, k) != k:
                        errors.append(f"{addr}: publish {publish} answered k={k} and "
                                      f"k={seen[publish]}")
                        return

            threads = [threading.Thread(target=train)] + [
                threading.Thread(target=read, args=(a,)) for a in c.serve]
            for t in threads:
                t.start()
            publishes = []
            try:
                for _ in range(8):
                    time.sleep(0.15)
                    r = c.psctl("--json", "model", "publish", MODEL, "--wait-s", "30")
                    publishes.append(json.loads(r.stdout)["publish"])
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            assert not errors, errors[0]
            assert publishes == list(range(1, 9)), publishes
            # both replicas moved to the last publish, which holds one step's values
            for addr in c.serve:
                poll(lambda: ask(stub(addr))[1] == 8, f"{addr} serves publish 8")
                k, publish, _ = ask(stub(addr))
                assert k is not None and k == seen.get(8, k) and k > 0, (k, publish)
            assert len(seen) >= 3, seen  # readers saw several cuts, each of one step
            ks = [seen[p] for p in sorted(seen)]
            assert ks == sorted(ks), seen  # later cuts never hold earlier steps
        finally:
            bad = c.stop()
            assert not bad, bad


def test_streaming_answers_do_mix():
    """The same model and trainer with streaming propagation: replicas apply each
    chunk's update as it comes, so answers that mix steps show up (this is what the
    test above would catch)."""
    config = dict(CONFIG, training={"optimizer": {"type": "sgd"}})
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(pathlib.Path(tmp), shards=3, replicas=1)
        try:
            upload(c, pathlib.Path(tmp), config)
            wait_ready(c.serve[0], MODEL)
            stop = threading.Event()

            def train():
                with psclient.Client(c.coordinator) as pc:
                    k = 0
                    while not stop.is_set():
                        k += 1
                        pc.assign(MODEL, "fc.weight", np.full((2, 4), k, np.float32))
                        pc.assign(MODEL, "fc.bias", np.full(2, k, np.float32))

            t = threading.Thread(target=train)
            t.start()
            s, mixed, deadline = stub(c.serve[0]), 0, time.monotonic() + 20
            try:
                while not mixed and time.monotonic() < deadline:
                    mixed += ask(s)[0] is None
            finally:
                stop.set()
                t.join(30)
            assert mixed, "no answer mixed steps in 20 s of streaming updates"
        finally:
            bad = c.stop()
            assert not bad, bad
