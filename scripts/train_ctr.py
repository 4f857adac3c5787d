#!/usr/bin/env python3
"""scripts/train_ctr.py: trains a click-through-rate model on a sparse embedding table
on the parameter servers while the cluster serves it.

Against a running cluster (scripts/cluster up), it uploads a model `ctr` (config.json
declares a table `w` of dimension 1 with FTRL-proximal on its rows; the graph is
embedding_bag(sum) over each sample's ids -> sigmoid), then streams a click log through
psclient: each step pulls the rows of a minibatch's ids, computes the logistic loss's
gradient per row with numpy, and pushes it (the shards apply FTRL to those rows). Rows
are made on first touch, on the shard that owns each id.

The click log is generated with a fixed seed from a planted model: three fields
(1,000,000 user ids, 100,000 item ids, 1,000 context ids, each drawn from a Zipf law,
so a few ids are frequent and most are rare) plus a bias id; each id has a planted
weight, a sample's click probability is sigmoid(sum of its ids' weights). The planted
model's AUC on the held-out samples is the best any model can reach. Every --every
steps the script sends the held-out samples to a serving replica over KServe v2
ModelInfer (INT64 ids) and prints step, samples seen, train log-loss, served AUC and
the planted AUC; at the end, the rows each shard created.

  .venv/bin/python scripts/train_ctr.py [--steps 500] [--batch 4096]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import train_common  # noqa: E402

train_common.reexec_in_venv(__file__)

import numpy as np  # noqa: E402

import psclient  # noqa: E402 - before kserve_client, whose stub folder goes first on sys.path
import kserve_client  # noqa: E402

FIELDS = [(1_000_000, 1.1), (100_000, 1.05), (1000, 1.0)]  # (ids, Zipf exponent; 1.0: uniform)
BATCH_INFER = 1024


class ClickLog:
    """The planted model and samples drawn from it (deterministic for a seed)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.offsets = np.cumsum([0] + [n for n, _ in FIELDS])
        self.bias_id = int(self.offsets[-1])
        self.n_ids = self.bias_id + 1
        self.w = self.rng.normal(0, 0.8, self.n_ids).astype(np.float32)
        self.w[self.bias_id] = -1.0
        self.perm = [self.rng.permutation(n) for n, _ in FIELDS]

    def _field(self, k, size):
        n, a = FIELDS[k]
        r = self.rng.zipf(a, size) if a > 1.0 else self.rng.integers(1, n + 1, size)
        r = np.where(r > n, self.rng.integers(1, n + 1, size), r)
        return self.perm[k][r - 1] + self.offsets[k]

    def samples(self, size):
        """(ids [size, 4] int64, clicks [size] float32, planted probabilities)."""
        ids = np.stack([self._field(k, size) for k in range(len(FIELDS))] +
                       [np.full(size, self.bias_id)], axis=1).astype(np.int64)
        p = 1 / (1 + np.exp(-self.w[ids].sum(axis=1)))
        return ids, (self.rng.random(size) < p).astype(np.float32), p


def auc(score, y):
    """Area under the ROC curve (rank statistic; ties broken by order)."""
    order = np.argsort(score, kind="stable")
    rank = np.empty(len(score))
    rank[order] = np.arange(1, len(score) + 1)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((rank[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def model_config(name, n_ids, lr):
    """Logistic regression: the sum of each sample's rows of table w, then a sigmoid."""
    return {
        "name": name, "max_batch_size": BATCH_INFER,
        "inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, len(FIELDS) + 1]}],
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 1]}],
        "layers": [
            {"op": "embedding_bag", "input": "ids", "output": "logit", "table": "w", "mode": "sum"},
            {"op": "dense", "input": "logit", "output": "p", "weight": "out.weight",
             "bias": "out.bias", "activation": "sigmoid"},
        ],
        "tables": [{"name": "w", "dim": 1, "seed": 0, "init": {"type": "zeros"},
                    "optimizer": {"type": "ftrl", "lr": lr, "beta": 1.0}}],
        "description": f"logistic regression over {n_ids} sparse ids (scripts/train_ctr.py)",
    }


def served_scores(stub, model, ids):
    out = []
    for i in range(0, len(ids), BATCH_INFER):
        x = np.ascontiguousarray(ids[i:i + BATCH_INFER], dtype="<i8")
        req = kserve_client.pb.ModelInferRequest(model_name=model)
        req.inputs.add(name="ids", datatype="INT64", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        r = stub.ModelInfer(req, timeout=30)
        out.append(np.frombuffer(r.raw_output_contents[0], "<f4"))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator", help="HOST:PORT (default: $PS_COORDINATOR, run/cluster.env)")
    ap.add_argument("--serve", help="a replica's HOST:PORT (default: the first SERVE= of run/cluster.env)")
    ap.add_argument("--model", default="ctr")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=0.1, help="FTRL's alpha (0.1)")
    ap.add_argument("--every", type=int, default=50, help="measure the served AUC every N steps")
    ap.add_argument("--test", type=int, default=20000, help="held-out samples (20000)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    a.coordinator, serve = train_common.endpoints(a.coordinator, a.serve, "train_ctr")
    log = ClickLog(a.seed)
    test_ids, test_y, test_p = log.samples(a.test)
    planted = auc(test_p, test_y)
    params = {"out.bias": np.zeros(1, np.float32), "out.weight": np.ones((1, 1), np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        train_common.upload(a.coordinator,
                            train_common.write_model(tmp, model_config(a.model, log.n_ids, a.lr),
                                                     params), "train_ctr")
    print(f"uploaded {a.model}: table w of {log.n_ids} ids (dim 1, FTRL lr {a.lr}); "
          f"click log: {a.batch} samples a step, CTR {test_y.mean():.3f}; serving from {serve}")
    stub = kserve_client.stub(serve)
    deadline = time.monotonic() + 60
    while True:
        try:
            served_scores(stub, a.model, test_ids[:1])
            break
        except Exception:  # noqa: BLE001 - not loaded yet
            if time.monotonic() > deadline:
                sys.exit(f"train_ctr: {serve} did not serve {a.model} within 60 s")
            time.sleep(0.2)

    print(f"{'step':>6} {'samples':>9} {'train logloss':>14} {'served AUC':>11} {'planted AUC':>12}")
    print(f"{0:>6} {0:>9} {'-':>14} {auc(served_scores(stub, a.model, test_ids), test_y):>11.4f} "
          f"{planted:>12.4f}", flush=True)
    t0, losses = time.monotonic(), []
    with psclient.Client(a.coordinator, name="train_ctr") as c:
        for step in range(1, a.steps + 1):
            ids, y, _ = log.samples(a.batch)
            u, inv = np.unique(ids, return_inverse=True)
            inv = inv.reshape(ids.shape)
            rows = c.pull_rows(a.model, "w", u)[:, 0]
            p = 1 / (1 + np.exp(-rows[inv].sum(axis=1)))
            losses.append(float(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7))))
            g = np.zeros(len(u), np.float32)
            np.add.at(g, inv, np.repeat((p - y)[:, None].astype(np.float32), ids.shape[1], axis=1))
            c.push_rows(a.model, "w", u, g[:, None])
            c.clock(a.model)
            if step % a.every == 0 or step == a.steps:
                served = auc(served_scores(stub, a.model, test_ids), test_y)
                print(f"{step:>6} {step * a.batch:>9} {np.mean(losses):>14.4f} {served:>11.4f} "
                      f"{planted:>12.4f}", flush=True)
                losses = []
    print(f"{a.steps * a.batch} samples in {time.monotonic() - t0:.1f} s")
    r = subprocess.run(train_common.psctl(a.coordinator) + ["status"], capture_output=True,
                       text=True)
    if r.returncode == 0:
        for t in json.loads(r.stdout).get("tables", []):
            if t["model"] == a.model:
                per = ", ".join(f"{k} {v}" for k, v in sorted(t["shards"].items()))
                print(f"rows created: {t['rows']} of table {t['model']}/{t['table']} "
                      f"({t['bytes'] / 1e6:.1f} MB with FTRL state): {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
