"""Shared pieces of the integration tests: real processes (ps-coordinator, ps-shard)
on loopback ports, psctl run as a subprocess the way scripts and operators run it, and
model directories (the committed sample model, or small ones written here with numpy).

Each process binds port 0 and writes its port into a port file, so tests never fight
over ports and can run in parallel. Every psctl run is checked for sanitizer reports
(the same tests run in the ASan+UBSan build), and so is every server log at teardown.
"""
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

SOURCE = pathlib.Path(os.environ.get("PS_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BUILD = pathlib.Path(os.environ.get("PS_BUILD_DIR", SOURCE / "build"))
COORDINATOR_BIN = BUILD / "ps" / "ps-coordinator"
SHARD_BIN = BUILD / "ps" / "ps-shard"
PSCTL = BUILD / "ps" / "psctl"
SAMPLE_MODEL = SOURCE / "models" / "digits_mlp"
HEARTBEAT_MS = 200

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_report(text):
    """The first sanitizer report in text, or None."""
    for mark in SANITIZER_MARKS:
        i = text.find(mark)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return None


# ------------------------------------------------------------------ python stubs ---

def _load_stubs():
    """Compiles proto/ps.proto and proto/coordinator.proto to Python in a directory of
    this suite's own (the e2e suite may be generating its copy at the same time), and
    imports them. Used to talk to shards directly, beside psctl."""
    from grpc_tools import protoc
    import grpc_tools

    out = BUILD / "pystubs-integration"
    out.mkdir(parents=True, exist_ok=True)
    include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
    for name in ("ps", "coordinator"):
        proto = SOURCE / "proto" / f"{name}.proto"
        target = out / f"{name}_pb2.py"
        if target.exists() and target.stat().st_mtime >= proto.stat().st_mtime:
            continue
        rc = protoc.main(["protoc", f"-I{SOURCE / 'proto'}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed for {proto}")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))


_load_stubs()


# ------------------------------------------------------------------ processes ---

def wait_port(port_file, proc, name, log_path, timeout=30):
    """Waits until a process writes its port file; fails with its log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = port_file.read_text().strip()
            if text.isdigit():
                return int(text)
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited ({proc.returncode}) during start-up:\n"
                                 f"{log_path.read_text()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{name} wrote no port file within {timeout}s:\n{log_path.read_text()[-3000:]}")


class Proc:
    """One server process, logging to a file."""

    def __init__(self, name, argv, tmp):
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.port_file = tmp / f"{name}.port"
        if self.port_file.exists():
            self.port_file.unlink()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([str(a) for a in argv] + ["--port-file", str(self.port_file)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.port = wait_port(self.port_file, self.proc, name, self.log_path)
        self.addr = f"127.0.0.1:{self.port}"

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5):
        """Signals the process (unless it already exited) and waits; SIGKILL if it has
        not exited in time. Returns its exit status (None when it had to be killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log(self):
        return self.log_path.read_text()


class Result:
    """A finished psctl run: rc, out, err, and doc (the parsed JSON, when --json)."""

    def __init__(self, argv, proc, json_mode):
        self.argv = argv
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.doc = None
        if json_mode and self.out.strip():
            self.doc = json.loads(self.out)  # must be exactly one valid document

    def __repr__(self):
        return (f"psctl {' '.join(self.argv)} -> rc {self.rc}\n--- stdout\n{self.out[-3000:]}"
                f"\n--- stderr\n{self.err[-3000:]}")


def run_psctl(*args, coordinator=None, json_mode=True, env_extra=None, cwd=None, timeout=120):
    """Runs psctl; --json unless json_mode is False. Fails the test on a sanitizer
    report. The environment has no PS_COORDINATOR/PS_RUN_DIR unless env_extra says."""
    argv = []
    if coordinator:
        argv += ["--coordinator", coordinator]
    if json_mode:
        argv.append("--json")
    argv += [str(a) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("PS_COORDINATOR", "PS_RUN_DIR")}
    env.update(env_extra or {})
    p = subprocess.run([str(PSCTL)] + argv, capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=cwd)
    report = sanitizer_report(p.stderr)
    assert report is None, f"sanitizer report from psctl {' '.join(argv)}:\n{report}"
    return Result(argv, p, json_mode)


class Cluster:
    """A coordinator and shards on loopback ports, in a temporary directory."""

    def __init__(self, tmp, shards=3, state_dir=None, replication=None, heartbeat_ms=HEARTBEAT_MS,
                 shard_args=(), data_dirs=False):
        self.tmp = pathlib.Path(tmp)
        self.shard_args = [str(a) for a in shard_args]  # more flags for every shard
        self.data_dirs = data_dirs  # each shard keeps --data-dir tmp/<id>.data
        self.replication = replication  # None: the coordinator's default (2)
        self.heartbeat_ms = heartbeat_ms
        self.state_dir = pathlib.Path(state_dir) if state_dir else self.tmp / "coordinator"
        self.procs = {}
        self.coordinator_port = 0
        self.start_coordinator()
        for i in range(1, shards + 1):
            self.start_shard(f"shard-{i}")
        self.wait_alive([f"shard-{i}" for i in range(1, shards + 1)])

    @property
    def coordinator(self):
        return f"127.0.0.1:{self.coordinator_port}"

    def start_coordinator(self):
        """Starts (or restarts, on the same port) the coordinator."""
        argv = [COORDINATOR_BIN, "--listen", f"127.0.0.1:{self.coordinator_port}",
                "--state-dir", self.state_dir, "--heartbeat-ms", self.heartbeat_ms]
        if self.replication:
            argv += ["--replication", self.replication]
        p = Proc("coordinator", argv, self.tmp)
        self.procs["coordinator"] = p
        self.coordinator_port = p.port
        return p

    def start_shard(self, shard_id, port=0):
        """Starts a shard (port 0: any free one; a restart passes the port it had)."""
        data = ["--data-dir", self.tmp / f"{shard_id}.data"] if self.data_dirs else []
        p = Proc(shard_id, [SHARD_BIN, "--id", shard_id, "--listen", f"127.0.0.1:{port}",
                            "--coordinator", self.coordinator] + self.shard_args + data, self.tmp)
        self.procs[shard_id] = p
        return p

    def psctl(self, *args, **kw):
        return run_psctl(*args, coordinator=self.coordinator, **kw)

    def ok(self, *args, **kw):
        """psctl that must succeed; returns the parsed JSON (or the Result without --json)."""
        r = self.psctl(*args, **kw)
        assert r.rc == 0, r
        return r.doc if kw.get("json_mode", True) else r

    def nodes(self):
        return {n["id"]: n for n in self.ok("status")["nodes"]}

    def wait_alive(self, ids, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.nodes()
            if all(i in nodes and nodes[i]["alive"] for i in ids):
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {ids} not all alive after {timeout}s: {nodes}")
            time.sleep(0.05)

    def stop(self, timeout=5):
        """Stops everything: SIGTERM to the shards together, then the coordinator; what
        has not exited after `timeout` seconds is killed. Returns the sanitizer reports
        found in the logs."""
        groups = [[p for n, p in self.procs.items() if n != "coordinator"],
                  [p for n, p in self.procs.items() if n == "coordinator"]]
        for group in groups:
            for p in group:
                if p.alive():
                    p.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for p in group:
                p.stop(sig=None, timeout=max(0.1, deadline - time.monotonic()))
        reports = []
        for name, p in self.procs.items():
            report = sanitizer_report(p.log())
            if report:
                reports.append(f"{name}:\n{report}")
        return reports


@pytest.fixture
def make_cluster(tmp_path):
    """Starts clusters for one test; stops them afterwards."""
    started = []

    def make(**kw):
        d = tmp_path / f"cluster{len(started)}"
        d.mkdir()
        c = Cluster(d, **kw)
        started.append(c)
        return c

    yield make
    reports = []
    for c in started:
        reports += c.stop()
    assert not reports, "sanitizer reports in server logs:\n" + "\n".join(reports)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster shared by a module's tests that do not break it."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    reports = c.stop()
    assert not reports, "sanitizer reports in server logs:\n" + "\n".join(reports)



# ------------------------------------------------------------------ ring helpers ---

def wait_for(what, fn, timeout=30):
    """Polls fn() until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def chunk_owners(c, model, tensor):
    """[(key, [addr of each owner, primary first])] per chunk, from psctl locate."""
    doc = c.ok("locate", model, tensor)
    return [(int(ch["key"], 16), [o["addr"] for o in ch["owners"]]) for ch in doc["chunks"]]


def pull_at(addr, key, epoch):
    """One chunk's values as the shard at addr holds them (any owner may answer)."""
    import grpc
    import ps_pb2 as pb
    import ps_pb2_grpc as pb_grpc

    with grpc.insecure_channel(addr) as ch:
        r = pb_grpc.ParameterServerStub(ch).Pull(pb.PullRequest(epoch=epoch, keys=[key]),
                                                 timeout=10)
        return np.frombuffer(r.values, "<f4")


def shards_of(c):
    """The ring's shards by id (psctl ring list)."""
    return {s["id"]: s for s in c.ok("ring", "list")["shards"]}

# ------------------------------------------------------------------ models ---

def read_safetensors(path):
    """{name: numpy array} of a safetensors file (F32 tensors only)."""
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", f"{name} is {t['dtype']}"
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype="<f4").reshape(t["shape"])
    return out


NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4"}


def write_safetensors(path, tensors, dtypes=None):
    """Writes {name: array} as safetensors, F32 unless dtypes names another type for a
    tensor (F16, F64, I32: the values are converted)."""
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        dtype = (dtypes or {}).get(name, "F32")
        b = np.ascontiguousarray(arr, dtype=NUMPY_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


TINY_CONFIG = {
    "name": "tiny",
    "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    "layers": [
        {"op": "dense", "input": "x", "output": "h", "weight": "fc1.weight", "bias": "fc1.bias",
         "activation": "relu"},
        {"op": "dense", "input": "h", "output": "logits", "weight": "fc2.weight", "bias": "fc2.bias"},
        {"op": "softmax", "input": "logits", "output": "y"},
    ],
}


def tiny_tensors(seed=1, hidden=50):
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.standard_normal((hidden, 4)).astype("<f4"),
        "fc1.bias": rng.standard_normal(hidden).astype("<f4"),
        "fc2.weight": rng.standard_normal((3, hidden)).astype("<f4"),
        "fc2.bias": rng.standard_normal(3).astype("<f4"),
    }


def write_model(root, config, tensors, version=1, dtypes=None):
    """A model directory: root/config.json and root/<version>/model.safetensors."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config, indent=1))
    write_safetensors(root / str(version) / "model.safetensors", tensors, dtypes)
    return root


@pytest.fixture
def sample_model():
    """The committed sample model directory (skips when it is not there yet)."""
    if not (SAMPLE_MODEL / "config.json").exists():
        pytest.skip(f"no sample model at {SAMPLE_MODEL} (scripts/make_sample_model writes it)")
    return SAMPLE_MODEL


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return pathlib.Path(dst)
