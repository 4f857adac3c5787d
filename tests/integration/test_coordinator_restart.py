"""Coordinator durability and restarts (issue 8 item 4, and item 6's "restart the
coordinator under load").

- Under load: a coordinator with a state dir, 3 shards with --data-dir, a replica
  serving the sample model, a training loop pushing ADDs of a known amount through one
  psclient.Client, and an inference loop through KServe v2. The coordinator is killed
  (-9) for longer than the heartbeats' dead-after time and started again on the same
  port and state dir. No inference call may fail; pushes go on while it is down and
  after it is back with the same client; the final value is the sum of the acknowledged
  ADDs; every node is alive again in `psctl status` without anyone acting; a model
  version uploaded afterwards reaches the replica. The time from the restart to "all
  nodes alive again" is printed. Nobody is shown dead meanwhile: the restarted
  coordinator counts its members alive for a dead-after interval, and they are back
  within a heartbeat interval.
- A member that stays silent after a restart is declared dead when that interval ends,
  alone.
- Killed while writing its state, again and again: it always starts with a valid state
  holding every acknowledged change, and the state directory collects no leftovers.
- A second coordinator on the same state directory (even on the same port) is refused.
- A damaged state file: it refuses to start and names the file.
"""
import json
import random
import shutil
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import COORDINATOR_BIN, SAMPLE_MODEL, Proc
from restart_cluster import (HEARTBEAT_MS, MODEL, InferenceLoop, RestartCluster, TrainingLoop,
                             infer_version, model_ready, poll, psclient)

import coordinator_pb2 as cpb  # noqa: E402
import coordinator_pb2_grpc as cpb_grpc  # noqa: E402

DEAD_AFTER_S = 3 * HEARTBEAT_MS / 1000  # MEMBERSHIP_DEAD_AFTER_BEATS intervals
DOWN_S = 4.0                            # how long the coordinator stays dead
assert DOWN_S > DEAD_AFTER_S            # longer than the dead-after time of heartbeats
TENSOR, AMOUNT = "fc2.weight", 2.0 ** -6  # each push adds AMOUNT to every float of it
CHUNK_FLOATS = 64                       # small chunks: every shard holds some of the model
BACK_LINE = "is back after"             # what ps/runtime logs when heartbeats get through again


@pytest.fixture
def cluster(tmp_path):
    if not (SAMPLE_MODEL / "config.json").exists():
        pytest.skip(f"no sample model at {SAMPLE_MODEL}")
    made = []

    def make(**kw):
        made.append(RestartCluster(tmp_path / f"c{len(made)}", **kw))
        return made[-1]

    yield make
    bad = [b for c in made for b in c.stop()]
    assert not bad, "\n".join(bad)


def heldout_pixels(n=8):
    d = json.loads((SAMPLE_MODEL / "heldout.json").read_text())
    return np.array(d["pixels"][:n], dtype=np.float32)


def add_sequence(start, amount, n):
    """What n ADDs of `amount` leave, applied one after another in float32 as a shard
    applies them."""
    v = np.array(start, dtype=np.float32)
    a = np.float32(amount)
    for _ in range(n):
        v = (v + a).astype(np.float32)
    return v


def test_restart_under_load_loses_nothing_and_everyone_reconnects(cluster, tmp_path):
    c = cluster()
    c.ok("model", "upload", SAMPLE_MODEL, "--chunk-floats", CHUNK_FLOATS)
    poll(lambda: model_ready(c.replica.addr), "the replica never got the model ready")
    x = heldout_pixels()
    with psclient.Client(c.coordinator) as probe:
        start = probe.pull(MODEL, TENSOR, version=1).ravel()
    backs_before = {i: c.log(i).count(BACK_LINE) for i in c.node_ids}

    training = TrainingLoop(c.coordinator, TENSOR, start.size, AMOUNT)
    inference = InferenceLoop(c.replica.addr, x)
    training.start()
    inference.start()
    try:
        poll(lambda: training.acked >= 5 and inference.ok_count() >= 5, "the loads never ran")
        t_kill = time.monotonic()
        c.kill_coordinator()
        time.sleep(DOWN_S)  # the outage itself (not a wait for something to happen)
        t_restart = time.monotonic()
        c.start_coordinator()
        t_up = time.monotonic()

        snapshots = []  # psctl status from the restart on: nobody may be shown dead

        def all_back():
            nodes = c.nodes()
            snapshots.append({i: nodes.get(i, {}).get("alive") for i in c.node_ids})
            return (all(snapshots[-1].values()) and
                    all(c.log(i).count(BACK_LINE) > backs_before[i] for i in c.node_ids))

        poll(all_back, "not every node reached the restarted coordinator", timeout=60)
        recovered_s = time.monotonic() - t_restart
        print(f"\nRESULT coordinator_down_s={t_restart - t_kill:.2f} "
              f"all_nodes_alive_after_restart_s={recovered_s:.2f}")
        poll(lambda: training.ok_count(since=t_up) >= 5 and inference.ok_count(since=t_up) >= 5,
             "the loads did not go on after the restart")
    finally:
        training.stop()
        inference.stop()

    assert inference.failures() == [], f"inference calls failed: {inference.failures()[:5]}"
    shown_dead = [s for s in snapshots if not all(s.values())]
    assert not shown_dead, f"psctl status showed nodes dead after the restart: {shown_dead[:3]}"
    assert "is dead: no heartbeat" not in c.log("coordinator-2"), c.log("coordinator-2")[-3000:]
    during = training.ok_count(since=t_kill, until=t_restart)
    print(f"pushes acknowledged: {training.acked} ({during} while the coordinator was down); "
          f"inferences: {inference.ok_count()} ({inference.ok_count(t_kill, t_restart)} while "
          f"it was down)")
    assert training.failures() == [], (
        "pushes failed (a client must go on with the registry entry it holds while the "
        f"coordinator is away, psclient/registry.py): {training.failures()[:3]}")
    assert during > 0, "no push was acknowledged while the coordinator was down"
    assert inference.ok_count(t_kill, t_restart) > 0

    with psclient.Client(c.coordinator) as probe:
        final = probe.pull(MODEL, TENSOR, version=1).ravel()
    applied = np.round((final.astype(np.float64) - start) / AMOUNT)
    assert np.all(applied == training.acked), (
        f"{training.acked} ADDs acknowledged, the shards applied {np.unique(applied)}")
    assert np.array_equal(final, add_sequence(start, AMOUNT, training.acked))

    nodes = c.wait_alive()
    assert all(nodes[i]["alive"] for i in c.node_ids), nodes

    # The watches resumed: a version uploaded now reaches the replica.
    v2 = tmp_path / "v2" / MODEL
    shutil.copytree(SAMPLE_MODEL, v2)
    (v2 / "1").rename(v2 / "2")
    c.ok("model", "upload", v2, "--chunk-floats", CHUNK_FLOATS)
    poll(lambda: infer_version(c.replica.addr, x) == "2",
         "the replica never served version 2, uploaded after the restart")


def test_after_a_restart_only_a_member_that_stays_silent_is_declared_dead(cluster):
    """The restarted coordinator counts every member it knows as alive for a dead-after
    interval from its restart; one that does not report in by then is declared dead,
    alone, and is alive again once it reports in."""
    c = cluster(shards=2, replica=False)
    frozen = c.procs["shard-2"].proc
    frozen.send_signal(signal.SIGSTOP)  # it can neither heartbeat nor reconnect
    try:
        c.kill_coordinator()
        c.start_coordinator()
        nodes = c.nodes()
        assert nodes["shard-1"]["alive"] and nodes["shard-2"]["alive"], nodes
        poll(lambda: not c.nodes()["shard-2"]["alive"], "shard-2 was never declared dead")
        assert c.nodes()["shard-1"]["alive"]
        log = c.log("coordinator-2")
        assert "2 nodes from" in log and "count as alive for 1500 ms" in log, log
        dead = [line for line in log.splitlines() if "is dead: no heartbeat" in line]
        assert len(dead) == 1 and "node shard-2 (shard at" in dead[0], log
    finally:
        frozen.send_signal(signal.SIGCONT)
    c.wait_alive()


# ------------------------------------------------------------ state writes ---

def registry_stub(addr):
    return cpb_grpc.CoordinatorStub(grpc.insecure_channel(addr))


def model_info(name):
    """A registry entry of the sample model's config under another name (no chunks are
    pushed: the coordinator keeps entries, the shards the values)."""
    config = json.loads((SAMPLE_MODEL / "config.json").read_text())
    config["name"] = name
    shapes = {"fc1.weight": [64, 64], "fc1.bias": [64], "fc2.weight": [10, 64], "fc2.bias": [10]}
    tensors = [cpb.TensorInfo(name=t, dtype="FP32", shape=s, chunk_floats=CHUNK_FLOATS,
                              chunks=-(-int(np.prod(s)) // CHUNK_FLOATS))
               for t, s in shapes.items()]
    return cpb.ModelInfo(name=name, config_json=json.dumps(config), tensors=tensors)


class RegistryChurn(threading.Thread):
    """Registers versions of one model and deletes the older ones, one call at a time,
    until the coordinator dies. `acked` is the set of versions after the last
    acknowledged change; `pending` the change in flight when it died (None or
    ("add", None) or ("delete", version))."""

    def __init__(self, addr, name, acked):
        super().__init__(daemon=True)
        self.stub, self.name = registry_stub(addr), name
        self.acked = set(acked)
        self.pending = None
        self.changes = 0

    def run(self):
        rng = random.Random(len(self.acked))
        while True:
            if self.acked and (len(self.acked) > 3 or rng.random() < 0.4):
                v = rng.choice(sorted(self.acked))
                self.pending = ("delete", v)
                call = lambda: self.stub.DeleteModel(  # noqa: E731
                    cpb.DeleteModelRequest(name=self.name, version=v, force=True), timeout=5)
            else:
                self.pending = ("add", None)
                call = lambda: self.stub.RegisterModel(  # noqa: E731
                    cpb.RegisterModelRequest(model=model_info(self.name)), timeout=5)
            try:
                r = call()
            except grpc.RpcError:
                return  # the coordinator died with this change in flight
            if self.pending[0] == "add":
                self.acked.add(r.version)
            else:
                self.acked.discard(self.pending[1])
            self.pending = None
            self.changes += 1


def versions(addr, name):
    resp = registry_stub(addr).ListModels(cpb.ListModelsRequest(), timeout=10)
    return {m.version for m in resp.models if m.name == name}


def check_state(got, acked, pending, run):
    """What a restart may show: every acknowledged change, plus the one in flight or
    not."""
    kept = acked - ({pending[1]} if pending and pending[0] == "delete" else set())
    assert kept <= got, f"run {run}: acknowledged versions {sorted(kept - got)} are gone"
    extra = got - acked
    assert not extra or (pending and pending[0] == "add" and len(extra) == 1), (
        f"run {run}: versions {sorted(extra)} that no call registered ({pending})")


def test_killed_while_writing_state_it_restarts_with_every_acknowledged_change(tmp_path):
    if not (SAMPLE_MODEL / "config.json").exists():
        pytest.skip(f"no sample model at {SAMPLE_MODEL}")
    state = tmp_path / "state"
    argv = [COORDINATOR_BIN, "--listen", "127.0.0.1:0", "--state-dir", state,
            "--heartbeat-ms", HEARTBEAT_MS]
    acked, pending, rng, changes, runs = set(), None, random.Random(8), 0, 25
    for run in range(runs + 1):
        p = Proc(f"coordinator-{run}", argv, tmp_path)  # fails the test if it cannot start
        if run == runs:
            break
        churn = None
        try:
            got = versions(p.addr, "churn")
            check_state(got, acked, pending, run)
            churn = RegistryChurn(p.addr, "churn", got)
            churn.start()
            poll(lambda: churn.changes >= 1, f"run {run}: no change acknowledged", timeout=20,
                 interval=0.001)
            time.sleep(rng.uniform(0, 0.05))  # die at a random point, most likely in a write
        finally:
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(timeout=10)
        churn.join(timeout=10)
        assert not churn.is_alive()
        changes += churn.changes
        acked, pending = churn.acked, churn.pending
    try:
        check_state(versions(p.addr, "churn"), acked, pending, runs)
        print(f"\n{changes} acknowledged registry changes over {runs} kill -9 runs: every "
              f"restart found them all")
    finally:
        assert p.stop() == 0, p.log()
    leftovers = sorted(f.name for f in state.iterdir()
                       if f.name not in ("coordinator.json", "LOCK"))
    assert leftovers == [], f"the state directory collects leftovers: {leftovers}"


def test_a_second_coordinator_on_the_same_state_dir_is_refused(tmp_path):
    """A replacement started while the old coordinator still runs (hung, or slow to
    stop) must not share its state: gRPC binds with SO_REUSEPORT, so on the same port
    it would even take half the connections."""
    state = tmp_path / "state"
    first = Proc("coordinator-first", [COORDINATOR_BIN, "--listen", "127.0.0.1:0",
                                       "--state-dir", state], tmp_path)
    try:
        port_file = tmp_path / "second.port"
        p = subprocess.Popen([str(COORDINATOR_BIN), "--listen", f"127.0.0.1:{first.port}",
                              "--state-dir", str(state), "--port-file", str(port_file)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            poll(lambda: p.poll() is not None or port_file.exists(), "the second one hangs")
        finally:
            if p.poll() is None:
                p.kill()
            out = p.communicate()[0]
        assert p.returncode == 1 and not port_file.exists(), f"it started:\n{out}"
        want = f"another process (pid {first.proc.pid}) already uses {state}"
        assert want in out and "stop it first" in out, out
        assert first.alive()
    finally:
        assert first.stop() == 0, first.log()
    second = Proc("coordinator-second", [COORDINATOR_BIN, "--listen", "127.0.0.1:0",
                                         "--state-dir", state], tmp_path)
    assert second.stop() == 0, second.log()  # once it is gone, the directory is free


def test_a_damaged_state_file_is_refused_by_name(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "coordinator.json"
    path.write_text('{"format": 1, "epoch": 3, "nodes": [')  # cut short
    log = tmp_path / "coordinator.log"
    with open(log, "w") as f:
        rc = subprocess.run([str(COORDINATOR_BIN), "--listen", "127.0.0.1:0", "--state-dir",
                             str(state)], stdout=f, stderr=subprocess.STDOUT, timeout=30).returncode
    text = log.read_text()
    assert rc != 0, text
    assert str(path) in text and "damaged" in text, text
