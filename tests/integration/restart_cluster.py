"""restart_cluster: what the coordinator restart tests (test_coordinator_restart.py)
share: a cluster every piece of which survives restarts (a coordinator with a state
directory, shards with --data-dir, one serving replica), KServe v2 stubs, and the two
loads that run while the coordinator is killed: a training loop that pushes ADDs of a
known amount through psclient, and an inference loop through KServe v2.

Every process binds port 0 and writes a port file (conftest.Proc); the coordinator is
restarted on the port it had. stop() SIGTERMs everything: each process must exit 0 (the
coordinators killed on purpose excepted) and no log may hold a sanitizer report.
"""
import pathlib
import signal
import sys
import threading
import time

import grpc
import numpy as np

from conftest import (BUILD, COORDINATOR_BIN, SHARD_BIN, SOURCE, Proc, run_psctl,
                      sanitizer_report)

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402

SERVE_BIN = BUILD / "serving" / "ps-serve"
HEARTBEAT_MS = 500  # dead after 1.5 s: the restarted coordinator's grace for its members
MODEL = "digits_mlp"
BIG = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def _load_inference_stubs():
    """Compiles proto/inference.proto to Python in a directory of this helper's own and
    imports it (conftest generates only ps and coordinator)."""
    from grpc_tools import protoc
    import grpc_tools

    out = BUILD / "pystubs-restart"
    out.mkdir(parents=True, exist_ok=True)
    proto = SOURCE / "proto" / "inference.proto"
    target = out / "inference_pb2.py"
    if not target.exists() or target.stat().st_mtime < proto.stat().st_mtime:
        include = str(pathlib.Path(grpc_tools.__file__).parent / "_proto")
        if protoc.main(["protoc", f"-I{SOURCE / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(proto)]) != 0:
            raise RuntimeError(f"protoc failed for {proto}")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))


_load_inference_stubs()
import inference_pb2 as ipb  # noqa: E402
import inference_pb2_grpc as ipb_grpc  # noqa: E402


def poll(cond, what, timeout=30, interval=0.05):
    """Calls cond() until it returns something true (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} (waited {timeout} s)"
        time.sleep(interval)


class RestartCluster:
    """A coordinator (state dir), shards (data dirs) and one replica, in `tmp`."""

    def __init__(self, tmp, shards=3, replica=True):
        self.tmp = pathlib.Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.tmp / "coordinator-state"
        self.procs = {}
        self.killed = []  # processes killed on purpose (their exit status is not checked)
        self.coordinator_port = 0
        self.coordinator_runs = 0
        self.start_coordinator()
        self.shard_ids = [f"shard-{i}" for i in range(1, shards + 1)]
        for sid in self.shard_ids:
            self.start(sid, [SHARD_BIN, "--id", sid, "--listen", "127.0.0.1:0",
                             "--coordinator", self.coordinator,
                             "--data-dir", self.tmp / f"{sid}-data"])
        self.replica = None
        if replica:
            self.replica = self.start("serve-1", [SERVE_BIN, "--id", "serve-1",
                                                  "--coordinator", self.coordinator])
        self.node_ids = self.shard_ids + (["serve-1"] if replica else [])
        self.wait_alive()

    @property
    def coordinator(self):
        return f"127.0.0.1:{self.coordinator_port}"

    def start(self, name, argv):
        p = Proc(name, argv, self.tmp)
        self.procs[name] = p
        return p

    def start_coordinator(self):
        """Starts the coordinator, or starts it again on the same port and state dir."""
        self.coordinator_runs += 1
        p = self.start(f"coordinator-{self.coordinator_runs}",
                       [COORDINATOR_BIN, "--listen", f"127.0.0.1:{self.coordinator_port}",
                        "--state-dir", self.state_dir, "--heartbeat-ms", HEARTBEAT_MS])
        self.coordinator_port = p.port
        self.coordinator_proc = p
        return p

    def kill_coordinator(self):
        p = self.coordinator_proc
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait(timeout=10)
        self.killed.append(p)

    def psctl(self, *args, **kw):
        return run_psctl(*args, coordinator=self.coordinator, **kw)

    def ok(self, *args, **kw):
        r = self.psctl(*args, **kw)
        assert r.rc == 0, r
        return r.doc if kw.get("json_mode", True) else r

    def nodes(self):
        """{id: node} from psctl status; {} while the coordinator does not answer."""
        r = self.psctl("status", timeout=30)
        return {n["id"]: n for n in r.doc["nodes"]} if r.rc == 0 and r.doc else {}

    def wait_alive(self, timeout=30):
        """Polls psctl status until every node is alive; returns {id: node}."""
        def all_alive():
            nodes = self.nodes()
            return nodes if all(nodes.get(i, {}).get("alive") for i in self.node_ids) else None
        return poll(all_alive, f"nodes {self.node_ids} not all alive", timeout)

    def log(self, name):
        return self.procs[name].log()

    def stop(self, timeout=20):
        """SIGTERM to everything still running; returns what went wrong."""
        bad = []
        for p in self.procs.values():
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
        for name, p in self.procs.items():
            rc = p.stop(sig=None, timeout=timeout)
            if p not in self.killed and rc != 0:
                bad.append(f"{name}: exit {rc}\n{p.log()[-3000:]}")
            report = sanitizer_report(p.log())
            if report:
                bad.append(f"{name}: sanitizer report\n{report}")
        return bad


# ------------------------------------------------------------------ loads ---

class Load(threading.Thread):
    """A loop run on its own thread until stop(): `step()` each round; every outcome is
    kept as (monotonic time, ok, what) in self.events."""

    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.events = []
        self.halt = threading.Event()
        self.crash = None

    def run(self):
        try:
            while not self.halt.is_set():
                self.events.append(self.step())
        except Exception as e:  # a bug in the loop itself: reported by stop()
            self.crash = e

    def stop(self):
        self.halt.set()
        self.join(timeout=60)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.crash is None, f"{self.name} crashed: {self.crash!r}"

    def ok_count(self, since=0.0, until=float("inf")):
        return sum(1 for t, ok, _ in self.events if ok and since <= t <= until)

    def failures(self):
        return [(t, what) for t, ok, what in self.events if not ok]


class TrainingLoop(Load):
    """Pushes ADDs of `amount` to every float of model/tensor through one psclient.Client
    (never restarted), counting the acknowledged ones."""

    def __init__(self, coordinator, tensor, count, amount):
        super().__init__("training")
        self.client = psclient.Client(coordinator)
        self.tensor, self.amount = tensor, amount
        self.delta = np.full(count, amount, dtype=np.float32)
        self.acked = 0

    def step(self):
        try:
            self.client.add(MODEL, self.tensor, self.delta, version=1)
        except psclient.Error as e:
            self.halt.wait(0.01)  # not a busy loop while nothing answers
            return (time.monotonic(), False, f"{e.code}: {e}")
        self.acked += 1
        return (time.monotonic(), True, "")

    def stop(self):
        super().stop()
        self.client.close()


class InferenceLoop(Load):
    """ModelInfer calls of `x` to one replica over KServe v2 gRPC."""

    def __init__(self, addr, x):
        super().__init__("inference")
        self.channel = grpc.insecure_channel(addr, options=BIG)
        self.stub = ipb_grpc.GRPCInferenceServiceStub(self.channel)
        self.x = np.ascontiguousarray(x, dtype="<f4")

    def step(self):
        req = ipb.ModelInferRequest(model_name=MODEL, id="restart")
        req.inputs.add(name="pixels", datatype="FP32", shape=list(self.x.shape))
        req.raw_input_contents.append(self.x.tobytes())
        try:
            resp = self.stub.ModelInfer(req, timeout=10)
        except grpc.RpcError as e:
            self.halt.wait(0.01)
            return (time.monotonic(), False, f"{e.code().name}: {e.details()}")
        return (time.monotonic(), True, resp.model_version)

    def stop(self):
        super().stop()
        self.channel.close()


def infer_version(addr, x):
    """The model version a replica answers x with ("" when it cannot)."""
    with grpc.insecure_channel(addr, options=BIG) as ch:
        req = ipb.ModelInferRequest(model_name=MODEL)
        x = np.ascontiguousarray(x, dtype="<f4")
        req.inputs.add(name="pixels", datatype="FP32", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        try:
            return ipb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10).model_version
        except grpc.RpcError:
            return ""


def model_ready(addr):
    with grpc.insecure_channel(addr) as ch:
        try:
            return ipb_grpc.GRPCInferenceServiceStub(ch).ModelReady(
                ipb.ModelReadyRequest(name=MODEL), timeout=5).ready
        except grpc.RpcError:
            return False
