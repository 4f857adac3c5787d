"""Issue 8's acceptance, end to end: a cluster serving a model while a training job pushes
to it goes through `psctl ring add`, `psctl ring drain` and, after a kill -9, `psctl ring
remove --force`, with zero failed inference calls and zero lost pushes (every push is an
ADD of 1.0 to every float of a tensor: at the end every float equals the acknowledged
count), and the replica ends at exactly the shards' state."""
import json
import sys
import threading
import time

import numpy as np
import pytest

import modelref
from serve_cluster import MODEL_DIR, PSCTL, SOURCE, Cluster, poll, wait_outputs, wait_ready
from test_serving import numpy_probs, pulled_params
from test_serving_failover import Inference

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402

TENSOR, FLOATS = "fc1.weight", 64 * 64


class Training(threading.Thread):
    """ADDs of 1.0 to every float of TENSOR through psclient, counting acknowledgements."""

    def __init__(self, coordinator):
        super().__init__(daemon=True)
        self.client = psclient.Client(coordinator)
        self.halt = threading.Event()
        self.acked, self.failed = 0, []

    def run(self):
        ones = np.ones(FLOATS, np.float32)
        while not self.halt.is_set():
            try:
                self.client.add("digits_mlp", TENSOR, ones, version=1)
                self.acked += 1
            except psclient.Error as e:
                self.failed.append(str(e)[:300])
            time.sleep(0.005)

    def stop(self):
        self.halt.set()
        self.join(timeout=60)
        self.client.close()


def nodes(c):
    return {n["id"]: n for n in json.loads(c.psctl("--json", "status").stdout)["nodes"]}


def test_add_drain_and_forced_remove_while_serving_and_training(tmp_path):
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    c = Cluster(tmp_path / "c", shards=3, replicas=1)
    try:
        c.psctl("model", "upload", str(MODEL_DIR))
        addr = c.serve[0]
        wait_ready(addr)
        c.push("digits_mlp", TENSOR, np.zeros(FLOATS, np.float32), op="--assign")
        x = np.array(json.loads((MODEL_DIR / "heldout.json").read_text())["pixels"][:32],
                     np.float32)
        infer, train = Inference(addr, x), Training(c.coordinator)
        infer.start()
        train.start()
        poll(lambda: train.acked >= 5, "pushes never started")

        c.start_shard("shard-4")  # registers, waits off the loaded ring
        poll(lambda: "shard-4" in nodes(c), "shard-4 never registered")
        t0 = time.monotonic()
        c.psctl("ring", "add", "--id", "shard-4", "--addr", f"127.0.0.1:{c.ports['shard-4']}",
                "--timeout-s", "120")
        added = time.monotonic() - t0
        assert nodes(c)["shard-4"]["in_ring"]
        n0 = train.acked
        poll(lambda: train.acked >= n0 + 5, "pushes stopped after the add")

        t0 = time.monotonic()
        c.psctl("ring", "drain", "--id", "shard-2", "--timeout-s", "120")
        drained = time.monotonic() - t0
        assert not nodes(c)["shard-2"]["in_ring"]
        n0 = train.acked
        poll(lambda: train.acked >= n0 + 5, "pushes stopped after the drain")

        c.procs["shard-3"].kill()  # -9
        c.procs["shard-3"].wait(timeout=10)
        t0 = time.monotonic()
        poll(lambda: not nodes(c)["shard-3"]["in_ring"], "no failover", timeout=30)
        c.psctl("ring", "remove", "--id", "shard-3", "--force")
        assert "shard-3" not in nodes(c)
        n0 = train.acked
        poll(lambda: train.acked >= n0 + 5, "pushes stopped after the kill", timeout=30)
        recovered = time.monotonic() - t0

        train.stop()
        time.sleep(0.3)
        infer.stop()
        print(f"add {added:.2f} s, drain {drained:.2f} s, failover + remove {recovered:.2f} s; "
              f"{train.acked} ADDs acknowledged, {infer.calls} inference calls")
        assert not train.failed, train.failed[:3]
        assert infer.calls > 0 and not infer.failures, infer.failures[:3]
        doc = json.loads(c.psctl("--json", "pull", "digits_mlp", TENSOR).stdout)
        values = np.array(doc["values"], np.float32)
        assert np.all(values == float(train.acked)), (np.unique(values)[:5], train.acked)
        reference = modelref.load_model(MODEL_DIR)  # the replica serves exactly that state
        now = pulled_params(c, reference)
        wait_outputs(addr, x, numpy_probs(reference[0], now, x), "after the ring changes",
                     timeout=30)
    finally:
        bad = c.stop()
    assert not bad, "\n".join(bad)
