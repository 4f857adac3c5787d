#!/usr/bin/env python3
"""scripts/train_digits.py: trains the digits classifier from scratch on the parameter
servers while the cluster serves it.

Against a running cluster (scripts/cluster up), it uploads a new model `digits_train`
(the sample model's graph: 64 pixels -> 128 ReLU -> 10 softmax, behind a fixed
standardizing `scale` layer, with random initial weights and "training": {"optimizer":
adam}), then trains it with psclient: each step pulls the weights, computes the
gradient of the cross-entropy of a minibatch with numpy, pushes it (the shards apply
Adam) and advances its clock. The serving replicas stream every update; every --every
steps the script asks one of them, over KServe v2 ModelInfer, to classify the 360
held-out digits (the split of scripts/make_sample_model: models/digits_mlp/heldout.json)
and prints a table: step, mean train loss since the last row, the version the replica
answered with (the model version, and its param_version, which grows with every update
the replica applied), served accuracy. It exits 1 if the final served
accuracy is below the offline-trained sample model's (models/digits_mlp/heldout.json).

Training data: scikit-learn's bundled digits (installed into .venv on first use, as
scripts/make_sample_model does), minus the held-out images.

  .venv/bin/python scripts/train_digits.py [--steps 600] [--batch 64] [--lr 0.01]
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

HIDDEN = 128


def training_data(heldout):
    """(x_train, y_train): sklearn's digits without the held-out images."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-r",
                               str(ROOT / "scripts" / "requirements-model.txt")])
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        d.data.astype(np.float32), d.target, test_size=0.2, stratify=d.target, random_state=0)
    if not np.array_equal(x_test, heldout[0]) or not np.array_equal(y_test, heldout[1]):
        sys.exit("train_digits: the held-out split differs from models/digits_mlp/heldout.json")
    return x_train, y_train


def model_config(name, lr):
    """The sample model's graph behind a fixed standardizing layer, trained with Adam."""
    config = json.loads((ROOT / "models" / "digits_mlp" / "config.json").read_text())
    config["name"] = name
    config["layers"] = [{"op": "scale", "input": "pixels", "output": "x", "scale": "norm.scale",
                         "shift": "norm.shift"}] + config["layers"]
    config["layers"][1]["input"] = "x"
    config["training"] = {"optimizer": {"type": "adam", "lr": lr}}
    return config


def gradients(p, x, y):
    """Cross-entropy loss of a minibatch and its gradients (numpy)."""
    xs = x * p["norm.scale"] + p["norm.shift"]
    h = np.maximum(xs @ p["fc1.weight"].T + p["fc1.bias"], 0)
    z = h @ p["fc2.weight"].T + p["fc2.bias"]
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(prob[np.arange(n), y] + 1e-12).mean())
    dz = prob
    dz[np.arange(n), y] -= 1
    dz /= n
    dh = dz @ p["fc2.weight"]
    dh[h <= 0] = 0
    g = {"fc2.weight": dz.T @ h, "fc2.bias": dz.sum(0), "fc1.weight": dh.T @ xs,
         "fc1.bias": dh.sum(0)}
    return loss, {k: v.astype(np.float32) for k, v in g.items()}


def served_accuracy(stub, model, x, y, batch):
    correct, version, pv = 0, None, None
    for i in range(0, len(x), batch):
        outs, version, pv = kserve_client.infer(stub, model, "pixels", x[i:i + batch])
        correct += int((outs["probabilities"].argmax(axis=1) == y[i:i + batch]).sum())
    return correct / len(x), version, pv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator", help="HOST:PORT (default: $PS_COORDINATOR, run/cluster.env)")
    ap.add_argument("--serve", help="a replica's HOST:PORT (default: the first SERVE= of "
                                    "run/cluster.env)")
    ap.add_argument("--model", default="digits_train", help="the model's name (digits_train)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate (0.01)")
    ap.add_argument("--every", type=int, default=50, help="measure the served accuracy every N steps")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    held = json.loads((ROOT / "models" / "digits_mlp" / "heldout.json").read_text())
    x_test = np.array(held["pixels"], dtype=np.float32)
    y_test = np.array(held["labels"])
    x_train, y_train = training_data((x_test, y_test))
    a.coordinator, serve = train_common.endpoints(a.coordinator, a.serve, "train_digits")

    rng = np.random.default_rng(a.seed)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1
    init = {"norm.scale": (1 / std).astype(np.float32), "norm.shift": (-mean / std).astype(np.float32),
            "fc1.weight": rng.normal(0, np.sqrt(2 / 64), (HIDDEN, 64)),
            "fc1.bias": np.zeros(HIDDEN), "fc2.weight": rng.normal(0, np.sqrt(1 / HIDDEN), (10, HIDDEN)),
            "fc2.bias": np.zeros(10)}
    init = {k: np.asarray(v, np.float32) for k, v in init.items()}
    with tempfile.TemporaryDirectory() as tmp:
        d = train_common.write_model(tmp, model_config(a.model, a.lr), init)
        version = train_common.upload(a.coordinator, d, "train_digits")
    print(f"uploaded {a.model} version {version} with random weights; training with Adam "
          f"(lr {a.lr}, batch {a.batch}) on {len(x_train)} digits; serving from {serve}")

    stub = kserve_client.stub(serve)
    deadline = time.monotonic() + 60
    while True:  # the replica loads the new version
        try:
            _, v, _ = kserve_client.infer(stub, a.model, "pixels", x_test[:1])
            if v == str(version):
                break
        except Exception:  # noqa: BLE001 - not loaded yet
            pass
        if time.monotonic() > deadline:
            sys.exit(f"train_digits: {serve} did not serve {a.model} version {version} in 60 s")
        time.sleep(0.2)

    print(f"{'step':>6} {'train loss':>11} {'served version':>15} {'param_version':>16} "
          f"{'served accuracy':>16}")
    trained = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    with psclient.Client(a.coordinator, name="train_digits") as c:
        fixed = {k: c.pull(a.model, k) for k in ("norm.scale", "norm.shift")}
        losses = []
        for step in range(1, a.steps + 1):
            p = dict(fixed, **{k: c.pull(a.model, k) for k in trained})
            idx = rng.choice(len(x_train), a.batch, replace=False)
            loss, g = gradients(p, x_train[idx], y_train[idx])
            for k in trained:
                c.push(a.model, k, g[k])
            c.clock(a.model)
            losses.append(loss)
            if step % a.every == 0 or step == a.steps:
                if step == a.steps:
                    time.sleep(0.5)  # the last updates reach the replica
                acc, v, pv = served_accuracy(stub, a.model, x_test, y_test, 64)
                print(f"{step:>6} {np.mean(losses):>11.4f} {v:>15} {pv:>16} {acc:>16.4f}",
                      flush=True)
                losses = []
    target = held["accuracy"]
    verdict = "at least as accurate as" if acc >= target else "LESS accurate than"
    print(f"served accuracy {acc:.4f}: {verdict} the offline-trained sample model ({target:.4f})")
    return 0 if acc >= target else 1


if __name__ == "__main__":
    sys.exit(main())
