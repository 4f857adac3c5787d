"""serve_cluster: what the serving end-to-end tests share (test_serving.py,
test_serve_hostile.py): a real local cluster (coordinator, shards, serving replicas)
on loopback ports, KServe stubs and helpers, and FakeShard, a Python stand-in for
ps-shard whose update streams can be made to stall (what no real shard does on
purpose), so a replica's stall detection can be tested.

Every process binds port 0 and writes its port to a file. Cluster.stop() SIGTERMs
everything; every process must exit 0 and its log must hold no sanitizer report (the
same tests run in the ASan+UBSan build)."""
import contextlib
import json
import pathlib
import tempfile
import random
import signal
import subprocess
import threading
import time
from concurrent import futures

import grpc
import numpy as np

import conftest  # noqa: F401 - generates the Python stubs first
import coordinator_pb2 as cpb
import inference_pb2 as pb
import inference_pb2_grpc as pb_grpc
import ps_pb2 as ppb
from conftest import BUILD, SOURCE

MODEL_DIR = SOURCE / "models" / "digits_mlp"
PSCTL = BUILD / "ps" / "psctl"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
BIG = [("grpc.max_receive_message_length", 100 << 20), ("grpc.max_send_message_length", 100 << 20)]


def wait_port(path, proc, what, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start-up")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start within {timeout}s")


def poll(cond, what, timeout=20, interval=0.02):
    """Calls cond() until it returns something true (returned) or timeout seconds pass."""
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() - t0 < timeout, f"{what} (waited {timeout}s)"
        time.sleep(interval)


class Cluster:
    def __init__(self, tmp, shards=3, replicas=2):
        self.tmp = pathlib.Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.procs = {}
        self.ports = {}
        self.start("coordinator", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                   "--state-dir", self.tmp / "coord", "--heartbeat-ms", "200"])
        self.coordinator = f"127.0.0.1:{self.ports['coordinator']}"
        for i in range(1, shards + 1):
            self.start_shard(f"shard-{i}")
        self.serve = [self.start_replica(f"serve-{i}") for i in range(1, replicas + 1)]

    def start(self, name, argv):
        port_file = self.tmp / f"{name}.port"
        if port_file.exists():
            port_file.unlink()
        log = open(self.tmp / f"{name}.log", "a")
        p = subprocess.Popen([str(a) for a in argv] + ["--port-file", str(port_file)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = p
        self.ports[name] = wait_port(port_file, p, name)
        return self.ports[name]

    def start_shard(self, name, port=0):
        return self.start(name, [BUILD / "ps" / "ps-shard", "--id", name, "--listen",
                                 f"127.0.0.1:{port}", "--coordinator", self.coordinator])

    def start_replica(self, name):
        port = self.start(name, [BUILD / "serving" / "ps-serve", "--id", name,
                                 "--coordinator", self.coordinator])
        return f"127.0.0.1:{port}"

    def restart_shard(self, name, sig=signal.SIGKILL):
        """Kills a shard (its data is lost: shards keep nothing on disk yet) and starts it
        again with the same id on the same port."""
        p = self.procs[name]
        p.send_signal(sig)
        p.wait(timeout=20)
        self.start_shard(name, self.ports[name])

    def psctl(self, *args, check=True, timeout=60):
        r = subprocess.run([str(PSCTL), "--coordinator", self.coordinator, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"psctl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def push(self, model, tensor, values, op="--add"):
        """Pushes a whole tensor (float32 values) with psctl."""
        path = self.tmp / "push.f32"
        path.write_bytes(np.ascontiguousarray(values, dtype="<f4").tobytes())
        self.psctl("push", model, tensor, op, "--file", str(path))

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text()

    def stop(self):
        """SIGTERM everything; returns what went wrong (exit codes, sanitizer reports)."""
        bad = []
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs.items():
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = "hung"
            if rc not in (0, -signal.SIGKILL):  # restarted shards were killed on purpose
                bad.append(f"{name}: exit {rc}\n{self.log(name)[-3000:]}")
            text = self.log(name)
            for mark in SANITIZER_MARKS:
                if mark in text:
                    i = text.find(mark)
                    bad.append(f"{name}: sanitizer report\n{text[max(0, i - 200):i + 3000]}")
                    break
        return bad


@contextlib.contextmanager
def serving(models=(), shards=2, replicas=1, setup=None, ready_timeout=30, tmp=None):
    """A Cluster (the test is skipped when psctl is not built) with each model directory
    of `models` uploaded, setup(cluster) run (rows to load, say), and every model ready
    on each replica; stopped afterwards, and then no process may have failed or left a
    sanitizer report. tmp: where it lives (default: a temporary directory)."""
    import pytest

    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with contextlib.ExitStack() as stack:
        where = tmp or stack.enter_context(tempfile.TemporaryDirectory())
        c = Cluster(where, shards=shards, replicas=replicas)
        try:
            for d in models:
                c.psctl("model", "upload", str(d), timeout=max(60, ready_timeout))
            if setup:
                setup(c)
            for d in models:
                name = json.loads((pathlib.Path(d) / "config.json").read_text())["name"]
                for addr in c.serve:
                    wait_ready(addr, name, timeout=ready_timeout)
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


def stub(addr):
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(addr, options=BIG))


def wait_ready(addr, model="digits_mlp", timeout=30):
    s = stub(addr)
    poll(lambda: s.ModelReady(pb.ModelReadyRequest(name=model), timeout=5).ready,
         f"{addr} never got {model} ready", timeout)


def infer_raw(s, x, model="digits_mlp", name="pixels", **kw):
    x = np.ascontiguousarray(x, dtype="<f4")
    req = pb.ModelInferRequest(model_name=model, id="req-1", **kw)
    req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return s.ModelInfer(req, timeout=10)


def output(resp, i=0):
    return np.frombuffer(resp.raw_output_contents[i], dtype="<f4").reshape(
        list(resp.outputs[i].shape))


def probs(resp):
    assert resp.outputs[0].name == "probabilities"
    return output(resp)


def param_version(resp):
    return resp.parameters["param_version"].int64_param


def wait_outputs(addr, x, want, what, timeout=20, seen=None, model="digits_mlp"):
    """Polls a replica until its probabilities for x equal want (1e-5); `seen` (a list)
    collects the param_version of every answer."""
    s = stub(addr)

    def close():
        r = infer_raw(s, x, model=model)
        if seen is not None:
            seen.append(param_version(r))
        return np.max(np.abs(probs(r) - want)) <= 1e-5

    poll(close, f"{addr}: {what}", timeout, 0.01)


def model_info(model_dir, name=None, chunk_floats=65536):
    """A registry entry (ModelInfo) for a model directory, without uploading anything."""
    import modelref
    config, params = modelref.load_model(model_dir)
    if name:
        config["name"] = name
    tensors = [cpb.TensorInfo(name=t, dtype="FP32", shape=list(a.shape), chunk_floats=chunk_floats,
                              chunks=(a.size + chunk_floats - 1) // chunk_floats)
               for t, a in params.items()]
    return cpb.ModelInfo(name=config["name"], config_json=json.dumps(config), tensors=tensors), params


class FakeShard:
    """A Python stand-in for ps-shard that follows proto/ps.proto (incarnation in every
    answer, versions = sequence numbers starting at wall-clock microseconds,
    prev_version on updates, keepalives every keepalive_s on idle streams) and
    registers with the coordinator like a shard. stall() makes every stream open at that
    moment go silent (no updates, no keepalives) while the shard keeps answering and
    accepting pushes; streams opened later work normally."""

    def __init__(self, coordinator, shard_id="fake-1", keepalive_s=1.0):
        self.id = shard_id
        self.keepalive_s = keepalive_s
        self.cond = threading.Condition()
        self.chunks = {}  # key -> (version, np.float32 array)
        self.log = []  # Updates, in seq order
        self.seq = time.time_ns() // 1000
        self.incarnation = random.getrandbits(63) + 1
        self.stall_epoch = 0
        self.subscribes = 0
        self.stopping = False
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=BIG)
        rpc = grpc.unary_unary_rpc_method_handler
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "ps.ParameterServer", {
                "Pull": rpc(self._pull, ppb.PullRequest.FromString, ppb.PullResponse.SerializeToString),
                "Push": rpc(self._push, ppb.PushRequest.FromString, ppb.PushResponse.SerializeToString),
                "Health": rpc(self._health, ppb.HealthRequest.FromString,
                              ppb.HealthResponse.SerializeToString),
                "Stat": rpc(self._stat, ppb.StatRequest.FromString, ppb.StatResponse.SerializeToString),
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    self._subscribe, ppb.SubscribeRequest.FromString, ppb.Update.SerializeToString),
            })])
        self.addr = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()
        self.coord = grpc.insecure_channel(coordinator)
        call = self.coord.unary_unary
        self._heartbeat = call("/ps.Coordinator/Heartbeat", cpb.HeartbeatRequest.SerializeToString,
                               cpb.HeartbeatResponse.FromString)
        call("/ps.Coordinator/RegisterNode", cpb.RegisterRequest.SerializeToString,
             cpb.RegisterResponse.FromString)(cpb.RegisterRequest(node=cpb.NodeInfo(
                 id=shard_id, addr=self.addr, weight=1, role=cpb.ROLE_SHARD)), timeout=10)
        self.hb = threading.Thread(target=self._heartbeats, daemon=True)
        self.hb.start()

    def stall(self):
        with self.cond:
            self.stall_epoch += 1
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.server.stop(grace=None)
        self.hb.join()

    def _heartbeats(self):
        while not self.stopping:
            try:
                self._heartbeat(cpb.HeartbeatRequest(id=self.id, seq=self.seq, keys=len(self.chunks)),
                                timeout=2)
            except grpc.RpcError:
                pass
            time.sleep(0.1)

    def _pull(self, req, ctx):
        with self.cond:
            missing = [k for k in req.keys if k not in self.chunks]
            if missing:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"{self.id} holds no chunk {missing[0]:016x}")
            got = [self.chunks[k] for k in req.keys]
            return ppb.PullResponse(versions=[v for v, _ in got], lengths=[a.size for _, a in got],
                                    seq=self.seq, incarnation=self.incarnation,
                                    values=b"".join(a.astype("<f4").tobytes() for _, a in got))

    def _push(self, req, ctx):
        values = np.frombuffer(req.values, dtype="<f4")
        with self.cond:
            off, versions = 0, []
            for key, n in zip(req.keys, req.lengths):
                v = values[off:off + n]
                off += n
                prev, old = self.chunks.get(key, (0, None))
                if req.op == ppb.PUSH_ADD:
                    if old is None or old.size != n:
                        ctx.abort(grpc.StatusCode.NOT_FOUND, f"no chunk {key:016x} to add to")
                    v = old + v
                self.seq += 1
                self.chunks[key] = (self.seq, v.copy())
                self.log.append(ppb.Update(seq=self.seq, key=key, version=self.seq, op=req.op,
                                           incarnation=self.incarnation, prev_version=prev,
                                           values=values[off - n:off].tobytes()))
                versions.append(self.seq)
            self.cond.notify_all()
            return ppb.PushResponse(versions=versions, seq=self.seq, incarnation=self.incarnation)

    def _health(self, req, ctx):
        with self.cond:
            return ppb.HealthResponse(id=self.id, keys=len(self.chunks), seq=self.seq,
                                      incarnation=self.incarnation)

    def _stat(self, req, ctx):
        with self.cond:
            got = [self.chunks.get(k, (0, np.zeros(0))) for k in req.keys]
            return ppb.StatResponse(lengths=[a.size for _, a in got], versions=[v for v, _ in got],
                                    incarnation=self.incarnation)

    def _subscribe(self, req, ctx):
        with self.cond:
            self.subscribes += 1
            epoch = self.stall_epoch
            nxt = req.from_seq + 1
            if req.incarnation and req.incarnation != self.incarnation:
                nxt = self.seq + 1
                yield ppb.Update(seq=self.seq, resync=True, incarnation=self.incarnation)
        while ctx.is_active() and not self.stopping:
            with self.cond:
                if self.stall_epoch != epoch:  # stalled: say nothing until cancelled
                    self.cond.wait(0.1)
                    continue
                pending = [u for u in self.log if u.seq >= nxt]
                if not pending:
                    self.cond.wait(self.keepalive_s)
                    pending = [u for u in self.log if u.seq >= nxt]
                    if not pending and self.stall_epoch == epoch:
                        pending = [ppb.Update(seq=self.seq, keepalive=True,
                                              incarnation=self.incarnation)]
            for u in pending:
                yield u
                nxt = max(nxt, u.seq + 1)
