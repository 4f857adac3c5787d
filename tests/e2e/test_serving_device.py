"""ps-serve on a device-memory backend, end to end (issue 9: the executor drives device
memory). No GPU runs here, so the replicas get the cpudev test backend
(kernels/test_module_cpudev.h: the CPU ops behind buffers of its own, refusing any
other pointer) as their "cuda" module: a folder holding libkernels_cuda.so -> the
build's libkernels_cpudev.so, named by PS_KERNELS_MODULE_DIR, with --device cuda.
A real cluster (coordinator, 3 shards, 2 replicas): the sample model's predictions
match numpy on both replicas, a pushed update reaches the device mirrors (the replica
marks and syncs what it writes), and a consistent model's published cut (built in a
second instance) is served from the device too.

PS_CPUDEV_MODULE names the module when the build under test lacks one (to run this
against an older build, whose ps-serve refused device backends)."""
import json
import os
import pathlib
import tempfile

import numpy as np
import pytest

import modelref
from conftest import BUILD
from serve_cluster import (MODEL_DIR, PSCTL, Cluster, infer_raw, poll, probs, stub, wait_outputs,
                           wait_ready)

MODULE = pathlib.Path(os.environ.get("PS_CPUDEV_MODULE", BUILD / "kernels" / "libkernels_cpudev.so"))


class DeviceCluster(Cluster):
    """Replicas started with --device cuda (the cpudev module under that name)."""

    def start_replica(self, name):
        port = self.start(name, [BUILD / "serving" / "ps-serve", "--id", name,
                                 "--coordinator", self.coordinator, "--device", "cuda"])
        return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    assert MODULE.exists(), f"{MODULE}: the cpudev test module is not built"
    with tempfile.TemporaryDirectory() as tmp:
        modules = pathlib.Path(tmp) / "modules"
        modules.mkdir()
        (modules / "libkernels_cuda.so").symlink_to(MODULE.resolve())
        old = os.environ.get("PS_KERNELS_MODULE_DIR")
        os.environ["PS_KERNELS_MODULE_DIR"] = str(modules)
        c = None
        try:
            c = DeviceCluster(pathlib.Path(tmp) / "cluster")
            c.psctl("model", "upload", str(MODEL_DIR))
            for addr in c.serve:
                wait_ready(addr)
            yield c
        finally:
            if old is None:
                os.environ.pop("PS_KERNELS_MODULE_DIR", None)
            else:
                os.environ["PS_KERNELS_MODULE_DIR"] = old
            bad = c.stop() if c else []
        assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def reference():
    return modelref.load_model(MODEL_DIR)


def test_replicas_compute_on_device_memory(cluster):
    for i in range(len(cluster.serve)):
        log = cluster.log(f"serve-{i + 1}")
        assert "forward passes on the cpudev backend (fp32, device memory)" in log, log[-2000:]


def test_predictions_match_numpy(cluster, reference):
    held = json.loads((MODEL_DIR / "heldout.json").read_text())
    x = np.array(held["pixels"], dtype=np.float32)[:128]
    want = np.concatenate([modelref.forward(*reference, {"pixels": x[i:i + 64]})["probabilities"]
                           for i in range(0, len(x), 64)])
    for addr in cluster.serve:
        s = stub(addr)
        got = np.concatenate([probs(infer_raw(s, x[i:i + 64])) for i in range(0, len(x), 64)])
        assert np.max(np.abs(got - want)) <= 1e-5


def test_pushed_update_reaches_the_device(cluster, reference):
    config, params = reference
    held = json.loads((MODEL_DIR / "heldout.json").read_text())
    x = np.array(held["pixels"][:4], dtype=np.float32)
    before = probs(infer_raw(stub(cluster.serve[0]), x))
    delta = np.zeros(10, dtype=np.float32)
    delta[2] = 10.0
    delta[5] = -4.0
    cluster.push("digits_mlp", "fc2.bias", delta)
    updated = dict(params, **{"fc2.bias": params["fc2.bias"] + delta})
    want = modelref.forward(config, updated, {"pixels": x})["probabilities"]
    assert np.max(np.abs(want - before)) > 1e-3  # it really changes
    for addr in cluster.serve:
        wait_outputs(addr, x, want, "the update never reached the device")
    cluster.push("digits_mlp", "fc2.bias", -delta)
    for addr in cluster.serve:
        wait_outputs(addr, x, before, "the undo never reached the device")


MIX = {
    "name": "mix", "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "fc.weight",
                "bias": "fc.bias"}],
    "training": {"propagation": "consistent", "optimizer": {"type": "sgd"}},
}


def test_published_cut_is_served_from_the_device(cluster, tmp_path):
    from test_serve_tables import write_safetensors
    d = tmp_path / "mix"
    (d / "1").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(MIX))
    write_safetensors(d / "1" / "model.safetensors",
                      {"fc.weight": np.zeros((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)})
    cluster.psctl("model", "upload", str(d), "--chunk-floats", "2")
    for addr in cluster.serve:
        wait_ready(addr, "mix")
    cluster.psctl("push", "mix", "fc.weight", "--assign", "--fill", "3")
    cluster.psctl("push", "mix", "fc.bias", "--assign", "--fill", "3")
    r = cluster.psctl("--json", "model", "publish", "mix", "--wait-s", "30")
    publish = json.loads(r.stdout)["publish"]
    x = np.vstack([np.zeros(4), np.eye(4)]).astype(np.float32)
    want = np.array([[3, 3]] + [[6, 6]] * 4, dtype=np.float32)  # y0 = b, y(j) = W[:, j] + b

    for addr in cluster.serve:
        s = stub(addr)

        def served():
            resp = infer_raw(s, x, model="mix", name="x")
            y = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(5, 2)
            return resp.parameters["publish"].int64_param == publish and np.array_equal(y, want)

        poll(served, f"{addr} never served publish {publish} from the device", timeout=30)
