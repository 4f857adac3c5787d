"""psclient_support: what tests/e2e/test_psclient.py shares with the integration tests
and what it needs besides: the integration suite's Cluster (a coordinator and shards on
loopback ports, psctl, the safetensors writer), loaded under its own module name so the
e2e conftest stays the conftest here; registering a model straight into the registry;
probes that say whether the shards already speak PUSH_OPTIMIZE and PullRows/PushRows;
the keys and placements the C side pins; an operation with scripted routing rounds;
and a numpy reference of the optimizers, written from the formulas in
ps/common/train_spec.h (in float64; the shards compute in float32), with the training
configs the tests use.
"""
import importlib.util
import json
import struct
import sys

import grpc
import numpy as np
import pytest

from conftest import SOURCE

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402,F401 - the tests take it from here
from psclient import routing  # noqa: E402
from psclient._wire import cpb, cpb_grpc, pb, pb_grpc  # noqa: E402

_spec = importlib.util.spec_from_file_location("integration_support",
                                               SOURCE / "tests" / "integration" / "conftest.py")
integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(integration)


# ------------------------------------------------------------------ cluster ---

def coordinator_stub(cluster):
    return cpb_grpc.CoordinatorStub(grpc.insecure_channel(cluster.coordinator))


def shard_stub(addr):
    return pb_grpc.ParameterServerStub(grpc.insecure_channel(addr))


def register(cluster, config, shapes, chunk_floats):
    """Registers a model version (config: the config.json object; shapes: {tensor:
    shape}) without pushing anything; returns its version."""
    tensors = [cpb.TensorInfo(name=n, dtype="FP32", shape=list(s), chunk_floats=chunk_floats,
                              chunks=-(-int(np.prod(s)) // chunk_floats))
               for n, s in shapes.items()]
    info = cpb.ModelInfo(name=config["name"], config_json=json.dumps(config), tensors=tensors)
    return coordinator_stub(cluster).RegisterModel(cpb.RegisterModelRequest(model=info),
                                                   timeout=10).version


def dense_config(name, inputs, outputs, training=None, tables=None):
    """A one-layer model x[-1, inputs] -> y[-1, outputs] (fc.weight, fc.bias)."""
    cfg = {"name": name, "max_batch_size": 8,
           "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, inputs]}],
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, outputs]}],
           "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "fc.weight",
                       "bias": "fc.bias"}]}
    if training is not None:
        cfg["training"] = training
    if tables is not None:
        cfg["tables"] = tables
    return cfg


def wait_shard_epochs(cluster, ids, epoch, timeout=15):
    """Polls the shards' Health until each knows ring `epoch` or later."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        seen = {i: shard_stub(cluster.procs[i].addr).Health(pb.HealthRequest(), timeout=5).epoch
                for i in ids}
        if all(e >= epoch for e in seen.values()):
            return seen
        assert time.monotonic() < deadline, f"shards did not learn epoch {epoch}: {seen}"
        time.sleep(0.05)


# ------------------------------------------------------------------ probes ---

def require_training_side(cluster):
    """Skips the test until the shards apply PUSH_OPTIMIZE and serve PullRows/PushRows,
    and the registry takes `training` and `tables` in config.json (asked at run time:
    the shard side is still being written)."""
    s = shard_stub(cluster.procs["shard-1"].addr)
    try:
        s.PullRows(pb.PullRowsRequest(), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip(f"the shards do not serve PullRows yet: {e.details()}")
    try:
        s.Push(pb.PushRequest(op=pb.PUSH_OPTIMIZE), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED or "unknown push op" in e.details():
            pytest.skip(f"the shards do not apply PUSH_OPTIMIZE yet: {e.details()}")
    probe = dense_config("probe_training", 2, 2, training={"optimizer": {"type": "sgd"}},
                         tables=[{"name": "t", "dim": 2}])
    try:
        register(cluster, probe, {"fc.weight": (2, 2), "fc.bias": (2,)}, 4)
    except grpc.RpcError as e:
        if 'unknown field "training"' in e.details() or 'unknown field "tables"' in e.details():
            pytest.skip(f"the registry does not take training sections yet: {e.details()}")
        raise


# ------------------------------------------------------------------ pinned values ---

DENSE_KEYS = [  # tests/unit/test_agreement.c, test_dense_keys_fixed
    ("digits_mlp", 1, "fc1.weight", 0, 0x0d0dd77065cbcad9),
    ("digits_mlp", 2, "fc2.bias", 1, 0xf840ddf34a2c919d),
    ("m", 0, "", 7, 0x69c14c60ae6c57d2),
    ("", 2**64 - 1, "", 2**32 - 1, 0x3de15a33d3843ab2),
]
PLACEMENT = [  # test_agreement.c, test_ring_placement_fixed: chunk, key, owners (R=3)
    (0, 0x0d0dd77065cbcad9, ("shard-3", "shard-1", "shard-2")),
    (1, 0xabb43c0e5cddb5b0, ("shard-3", "shard-2", "shard-1")),
    (2, 0x3390ff34387caf3c, ("shard-2", "shard-1", "shard-3")),
    (3, 0x7fe196d46ed24683, ("shard-3", "shard-1", "shard-2")),
    (4, 0x7b73e3cdd2c5b22e, ("shard-3", "shard-2", "shard-1")),
    (5, 0x5b187a61e2a386b5, ("shard-2", "shard-3", "shard-1")),
    (6, 0x64c98176daab69df, ("shard-2", "shard-3", "shard-1")),
    (7, 0x113ec89f81757a8c, ("shard-1", "shard-2", "shard-3")),
]
ROW_KEYS = [  # ps_key_row (ps/common/util.c), computed by the C function
    ("rec", "user_emb", 0, 0x8ca942276d00e54d),
    ("rec", "user_emb", 123456789, 0xffd74d3d60ad987c),
    ("", "", 2**64 - 1, 0xc9ba4b5fc803992c),
    ("digits_mlp", "t", 1 << 40, 0xf3213e03d382e78c),
]


def serialize(epoch, vpw, members):
    """hashring_serialize's format, written independently of ring.py."""
    out = b"PSRG" + struct.pack("<IQII", 1, epoch, vpw, len(members))
    for mid, addr, weight in sorted(members):
        out += struct.pack("<IH", weight, len(mid)) + mid.encode()
        out += struct.pack("<H", len(addr)) + addr.encode()
    return out


# ------------------------------------------------------------------ scripted routing ---

class ScriptedOp(routing.Op):
    """An operation whose rounds are scripted (see the test below)."""
    what = "scripted"
    write = True

    def __init__(self, n):
        self.keys = np.arange(n, dtype=np.uint64)
        self.stale_reads = 0

    def on_stale(self):
        self.stale_reads += 1
        return True


# ------------------------------------------------------------------ reference ---

TRAINING = {"optimizer": {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
            "tensors": {"fc.weight": {"type": "sgd", "lr": 0.05, "momentum": 0.9,
                                      "weight_decay": 0.01}}}
TABLES = [{"name": "sgd_t", "dim": 4, "seed": 1, "init": {"type": "normal", "scale": 0.1},
           "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}},
          {"name": "adagrad_t", "dim": 3, "seed": 2, "init": {"type": "uniform", "scale": 0.5},
           "optimizer": {"type": "adagrad", "lr": 0.1, "initial_accumulator": 0.1}},
          {"name": "adam_t", "dim": 5, "init": {"type": "normal", "scale": 0.05},
           "optimizer": {"type": "adam", "lr": 0.01, "weight_decay": 0.001}},
          {"name": "ftrl_t", "dim": 2, "optimizer": {"type": "ftrl", "lr": 0.1, "l1": 0.01,
                                                      "l2": 0.01}}]



class Reference:
    """One optimizer over some weights, in float64: step(g) applies a gradient as the
    shards do (train_spec.h), `steps` counting the updates, this one included."""

    def __init__(self, kind, params, w):
        self.kind, self.h = kind, dict(params)
        self.w = np.asarray(w, dtype=np.float64).copy()
        self.steps = 0
        zero = np.zeros_like(self.w)
        if kind == "adagrad":
            self.state = [zero + self.h["initial_accumulator"]]
        else:
            self.state = [zero.copy(), zero.copy()]

    def step(self, g):
        h, w = self.h, self.w
        g = np.asarray(g, dtype=np.float64)
        self.steps += 1
        if self.kind == "sgd":
            g = g + h["weight_decay"] * w
            m = h["momentum"] * self.state[0] + g
            self.state[0] = m
            self.w = w - h["lr"] * m
        elif self.kind == "adagrad":
            g = g + h["weight_decay"] * w
            self.state[0] = self.state[0] + g * g
            self.w = w - h["lr"] * g / (np.sqrt(self.state[0]) + h["eps"])
        elif self.kind == "adam":
            g = g + h["weight_decay"] * w
            m = h["beta1"] * self.state[0] + (1 - h["beta1"]) * g
            v = h["beta2"] * self.state[1] + (1 - h["beta2"]) * g * g
            self.state = [m, v]
            mhat = m / (1 - h["beta1"] ** self.steps)
            vhat = v / (1 - h["beta2"] ** self.steps)
            self.w = w - h["lr"] * mhat / (np.sqrt(vhat) + h["eps"])
        elif self.kind == "ftrl":
            z, n = self.state
            sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / h["lr"]
            z = z + g - sigma * w
            n = n + g * g
            self.state = [z, n]
            shrunk = -(z - np.sign(z) * h["l1"]) / ((h["beta"] + np.sqrt(n)) / h["lr"] + h["l2"])
            self.w = np.where(np.abs(z) <= h["l1"], 0.0, shrunk)
        else:
            raise AssertionError(f"no reference for {self.kind}")
        return self.w


class RowsReference:
    """A Reference per row of `ids` (starting from `rows`); push(ids, grads) sums the
    gradients of repeated ids, steps each row pushed once, and answers every row."""

    def __init__(self, optimizer, ids, rows):
        self.ids = [int(i) for i in ids]
        self.refs = {i: Reference(optimizer.kind, optimizer.params, r)
                     for i, r in zip(self.ids, rows)}

    def push(self, ids, grads):
        summed = {}
        for i, g in zip(ids.tolist(), grads):
            summed[i] = summed.get(i, np.zeros(len(g), np.float32)) + g
        for i, g in summed.items():
            self.refs[i].step(g)
        return np.stack([self.refs[i].w for i in self.ids])


def initial_row(init, scale, seed, row_id, dim):
    """Row `row_id` of a table never pushed to, by the formula of train_spec.h
    (table_spec_init_row: SplitMix64's finalizer, then uniform or Box-Muller)."""
    m64 = (1 << 64) - 1

    def mix(x):
        x = (x + 0x9e3779b97f4a7c15) & m64
        x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & m64
        x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & m64
        return x ^ (x >> 31)

    base = mix(seed ^ mix(row_id))
    u = [((mix((base + j) & m64) >> 40) + 0.5) / 2.0**24 for j in range(2 * dim)]
    if init == "zeros":
        return np.zeros(dim, np.float32)
    if init == "uniform":
        return np.array([scale * (2 * u[j] - 1) for j in range(dim)], np.float32)
    return np.array([scale * np.sqrt(-2 * np.log(u[j])) * np.cos(2 * np.pi * u[j + dim])
                     for j in range(dim)], np.float32)


def params_of(kind, **given):
    """Every hyper-parameter of `kind`: the defaults of train_spec.h, then `given`."""
    from psclient.train_config import OPTIMIZER_DEFAULTS
    h = dict(OPTIMIZER_DEFAULTS[kind])
    h.update(given)
    return h


def assert_close(got, want, what, rtol=2e-5, atol=2e-6):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    if (err > 0).any():
        i = int(np.argmax(err))
        raise AssertionError(f"{what}: {int((err > 0).sum())} of {err.size} values differ; first "
                             f"worst at flat {i}: got {got.reshape(-1)[i]!r}, "
                             f"want {want.reshape(-1)[i]!r}")


