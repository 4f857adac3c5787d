"""Ring membership and the coordinator's defences, against real processes on loopback
ports: a shard that starts after data was uploaded waits off the ring instead of
hiding a quarter of the chunks (and `psctl ring add` says why it refuses); `ring
remove` asks the shard itself, also right after a coordinator restart (--force only
for a shard that cannot be asked); a damaged state file stops the coordinator with a
message; hostile RegisterModel/Register requests and piles of unread watch streams get
clear statuses while the coordinator keeps serving; deaths and returns are logged.
These pin the one-copy policies (--replication 1): test_replication.py covers R = 2."""
import json
import signal
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

import coordinator_pb2 as cpb
import coordinator_pb2_grpc as cpb_grpc
import ps_pb2
import ps_pb2_grpc

from conftest import (COORDINATOR_BIN, TINY_CONFIG, shards_of, tiny_tensors, wait_for,
                      write_model)


def upload_tiny(c, root, name="tiny", seed=1):
    """Uploads a tiny model in chunks of 8 floats (52 chunks: every shard gets some)."""
    d = write_model(root / name, dict(TINY_CONFIG, name=name), tiny_tensors(seed))
    c.ok("model", "upload", d, "--chunk-floats", "8")
    return tiny_tensors(seed)


def all_pull_back(c, name, tensors):
    for t, want in tensors.items():
        doc = c.ok("pull", name, t)
        got = np.array(doc["values"], dtype=np.float32).reshape(doc["shape"])
        assert np.array_equal(got, want), t


def shard_keys(addr):
    with grpc.insecure_channel(addr) as ch:
        return ps_pb2_grpc.ParameterServerStub(ch).Health(ps_pb2.HealthRequest(), timeout=10).keys


# ================================================================ D6: joining a loaded ring ===

def test_new_shard_waits_off_a_ring_that_holds_data_until_added(make_cluster, tmp_path):
    c = make_cluster(replication=1)
    tensors = upload_tiny(c, tmp_path)
    epoch = c.ok("ring", "list")["epoch"]
    holding = {sid: shard_keys(c.procs[sid].addr) for sid in ("shard-1", "shard-2", "shard-3")}
    total = sum(holding.values())
    assert total == 52

    extra = c.start_shard("shard-4")
    s4 = wait_for("shard-4 to register", lambda: shards_of(c).get("shard-4"))
    assert not s4["in_ring"], f"shard-4 joined a ring that holds {total} keys: {s4}"
    all_pull_back(c, "tiny", tensors)  # no chunk went NOT_FOUND
    ring = c.ok("ring", "list")
    assert s4.get("waiting") and ring["epoch"] == epoch and ring["waiting"] == ["shard-4"], ring
    text = c.ok("ring", "list", json_mode=False).out
    assert "WAITING" in text and "copies the keys it would own to it" in text, text

    # said once in the coordinator's log, with the reason, for all its heartbeats since
    log = c.procs["coordinator"].log()
    assert log.count("waits off the ring:") == 1, log[-3000:]
    assert "shard shard-4 at 127.0.0.1:" in log and "on the ring holds" in log, log[-3000:]

    # a restarted coordinator keeps it waiting
    assert c.procs["coordinator"].stop() == 0
    c.start_coordinator()
    assert shards_of(c)["shard-4"]["waiting"]
    assert c.ok("ring", "list")["epoch"] == epoch

    # `ring add` moves the keys it will own to it first, then puts it on the ring
    r = c.psctl("ring", "add", "--id", "shard-4", "--addr", extra.addr, "--timeout-s", "60")
    assert r.rc == 0, r
    ring = c.ok("ring", "list")
    s4 = next(s for s in ring["shards"] if s["id"] == "shard-4")
    assert s4["in_ring"] and ring["epoch"] > epoch, ring
    all_pull_back(c, "tiny", tensors)  # every chunk where the new ring says it is
    assert shard_keys(extra.addr) > 0




def test_shards_started_before_any_upload_all_join(make_cluster, tmp_path):
    """What scripts/cluster up does: every shard starts before data arrives."""
    c = make_cluster(replication=1, shards=2)
    c.start_shard("shard-3")
    s3 = wait_for("shard-3 on the ring", lambda: shards_of(c).get("shard-3", {}).get("in_ring"))
    assert s3
    tensors = upload_tiny(c, tmp_path)
    assert all(shard_keys(c.procs[s].addr) > 0 for s in ("shard-1", "shard-2", "shard-3"))
    all_pull_back(c, "tiny", tensors)


def test_restarted_shard_goes_back_to_its_place(make_cluster, tmp_path):
    c = make_cluster(replication=1)
    upload_tiny(c, tmp_path)
    victim = c.procs["shard-2"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    epoch = c.ok("ring", "list")["epoch"]
    addr = c.start_shard("shard-2").addr  # same id, new port
    wait_for("shard-2 back", lambda: shards_of(c)["shard-2"]["addr"] == addr)
    s2 = shards_of(c)["shard-2"]
    assert s2["in_ring"] and not s2.get("waiting") and s2["alive"], s2
    assert c.ok("ring", "list")["epoch"] == epoch + 1  # its new address


# ================================================================ D8: removing a loaded shard ===

def test_remove_of_a_loaded_shard_right_after_a_coordinator_restart(make_cluster, tmp_path):
    c = make_cluster(replication=1)
    upload_tiny(c, tmp_path)
    sid = "shard-1"
    keys = shard_keys(c.procs[sid].addr)
    assert keys > 0
    shard = c.procs[sid].proc
    shard.send_signal(signal.SIGSTOP)  # it cannot heartbeat, nor answer
    try:
        assert c.procs["coordinator"].stop() == 0
        c.start_coordinator()  # it has no heartbeat figure from the shard
        r = c.psctl("ring", "remove", "--id", sid)
        assert r.rc == 1 and r.doc["error"]["code"] == "FAILED_PRECONDITION", r
        assert f"cannot ask shard {sid}" in r.err and "--force" in r.err, r
        assert shards_of(c)[sid]["in_ring"]
    finally:
        shard.send_signal(signal.SIGCONT)
    wait_for(f"{sid} alive", lambda: c.nodes()[sid]["alive"])
    for extra in ([], ["--force"]):  # it answers that it holds data: never removed
        r = c.psctl("ring", "remove", "--id", sid, *extra)
        assert r.rc == 1 and r.doc["error"]["code"] == "FAILED_PRECONDITION", r
        assert f"shard {sid} holds {keys} keys" in r.err, r
    assert shards_of(c)[sid]["in_ring"]


def test_force_removes_a_dead_shard(make_cluster, tmp_path):
    c = make_cluster(replication=1)
    upload_tiny(c, tmp_path)
    victim = c.procs["shard-3"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    wait_for("shard-3 dead", lambda: not c.nodes()["shard-3"]["alive"])
    epoch = c.ok("ring", "list")["epoch"]
    r = c.psctl("ring", "remove", "--id", "shard-3")
    assert r.rc == 1 and "psctl ring remove --id shard-3 --force" in r.err, r
    doc = c.ok("ring", "remove", "--id", "shard-3", "--force")
    assert doc["epoch"] == epoch + 1
    assert "shard-3" not in shards_of(c)
    log = c.procs["coordinator"].log()
    assert "removed shard shard-3" in log and "by force" in log


# ================================================================ state file ===

def start_coordinator_expecting_exit(tmp_path, state_dir):
    """Runs ps-coordinator on a state dir; returns (exit code, output). Fails if it starts
    serving (writes its port file) instead of refusing."""
    port_file = tmp_path / "refused.port"
    p = subprocess.Popen([str(COORDINATOR_BIN), "--listen", "127.0.0.1:0", "--state-dir",
                          str(state_dir), "--port-file", str(port_file)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while p.poll() is None:
        if port_file.exists() or time.monotonic() > deadline:
            p.kill()
            out = p.communicate()[0]
            raise AssertionError(f"the coordinator started on a damaged state file:\n{out}")
        time.sleep(0.02)
    return p.returncode, p.communicate()[0]


@pytest.mark.parametrize("damage", ["truncated", "wrong_type", "garbage"])
def test_damaged_state_file_is_refused_at_start_up(make_cluster, tmp_path, damage):
    c = make_cluster(replication=1, shards=1)
    upload_tiny(c, tmp_path)
    assert c.procs["coordinator"].stop() == 0
    path = c.state_dir / "coordinator.json"
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[:len(text) // 2])
        want = "truncated"
    elif damage == "wrong_type":
        doc = json.loads(text)
        doc["nodes"][0]["weight"] = "1"
        path.write_text(json.dumps(doc))
        want = "nodes[0].weight: expected an integer 1..1000, got a string"
    else:
        path.write_bytes(b"\x7fELF\x00\x01garbage")
        want = "not valid JSON"
    rc, out = start_coordinator_expecting_exit(tmp_path, c.state_dir)
    assert rc == 1, out
    assert str(path) in out and want in out and "move it away" in out, out


# ================================================================ hostile clients ===

def coordinator_stub(c):
    return cpb_grpc.CoordinatorStub(grpc.insecure_channel(
        c.coordinator, options=[("grpc.max_send_message_length", 64 << 20)]))


def tensor(name, shape, chunk_floats=8, chunks=None):
    n = int(np.prod(shape, dtype=object)) if shape else 0
    if chunks is None:
        chunks = max(1, -(-n // chunk_floats)) if chunk_floats else 1
    return cpb.TensorInfo(name=name, dtype="FP32", shape=shape, chunk_floats=chunk_floats,
                          chunks=min(chunks, 2**32 - 1))


def tiny_info(name="tiny", **kw):
    shapes = {"fc1.weight": [50, 4], "fc1.bias": [50], "fc2.weight": [3, 50], "fc2.bias": [3]}
    m = cpb.ModelInfo(name=name, config_json=json.dumps(dict(TINY_CONFIG, name=name)),
                      tensors=[tensor(t, s) for t, s in shapes.items()])
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def refused(call, request, code, words):
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=30)
    assert e.value.code() == code, (e.value.code(), e.value.details())
    assert words in e.value.details(), e.value.details()


def test_hostile_register_model_requests(make_cluster):
    c = make_cluster(replication=1, shards=1)
    stub = coordinator_stub(c)
    reg = stub.RegisterModel
    bad = grpc.StatusCode.INVALID_ARGUMENT
    m = tiny_info()
    m.tensors.extend([tensor(f"t{i}", [1]) for i in range(100000)])
    refused(reg, cpb.RegisterModelRequest(model=m), bad, "tensors (1 to 16384 allowed)")
    refused(reg, cpb.RegisterModelRequest(model=tiny_info(name="m" * 10000)), bad, "model name")
    m = tiny_info()
    m.tensors.append(tensor("x" * 10000, [1]))
    refused(reg, cpb.RegisterModelRequest(model=m), bad, "a name of 1 to 255 bytes")
    for shape, words in (([2**62, 4], "the most a replica can hold"),
                         ([2**32, 2**32], "the most a replica can hold"),
                         ([-1, 4], "it must be positive"), ([0], "it must be positive")):
        m = tiny_info()
        m.tensors[0].CopyFrom(tensor("fc1.weight", shape, chunks=1))
        refused(reg, cpb.RegisterModelRequest(model=m), bad, words)
    m = tiny_info()
    m.tensors[0].chunks = 24  # 200 floats in chunks of 8 need 25
    refused(reg, cpb.RegisterModelRequest(model=m), bad, "24 chunks of 8 floats do not cover")
    # a valid config, padded past the limit with a field replicas ignore
    padded = json.dumps(dict(TINY_CONFIG, name="tiny", padding="p" * (8 << 20)))
    refused(reg, cpb.RegisterModelRequest(model=tiny_info(config_json=padded)), bad,
            "config.json of 1 to 1048576 bytes")
    refused(reg, cpb.RegisterModelRequest(model=tiny_info(version=2**64 - 1)), bad,
            "version 18446744073709551615 is over")
    # nothing was stored, and the coordinator is fine
    assert stub.ListModels(cpb.ListModelsRequest(), timeout=10).models == []
    assert stub.RegisterModel(cpb.RegisterModelRequest(model=tiny_info()), timeout=10).version == 1


def test_hostile_register_requests(make_cluster):
    c = make_cluster(replication=1, shards=1)
    stub = coordinator_stub(c)
    bad = grpc.StatusCode.INVALID_ARGUMENT
    epoch = stub.GetRing(cpb.GetRingRequest(), timeout=10).epoch
    for node, words in [
            (cpb.NodeInfo(id="s9", addr="127.0.0.1:1", weight=2**32 - 1),
             "weight 4294967295 is over 1000"),
            (cpb.NodeInfo(id="", addr="127.0.0.1:1"), "node id of 1-63 characters"),
            (cpb.NodeInfo(id="x" * 10240, addr="127.0.0.1:1"), "node id of 1-63 characters"),
            (cpb.NodeInfo(id="s9", addr="h" * 10240 + ":1"), "is not HOST:PORT")]:
        refused(stub.RegisterNode, cpb.RegisterRequest(node=node), bad, words)
    assert stub.GetRing(cpb.GetRingRequest(), timeout=10).epoch == epoch
    assert [n.id for n in stub.GetRing(cpb.GetRingRequest(), timeout=10).nodes] == ["shard-1"]


def test_many_unread_watch_streams(make_cluster, tmp_path):
    """Hundreds of watches that never read: the ones past the limit are refused at once;
    the coordinator keeps answering (it sends to the unread ones without its lock, so a
    full stream stalls only itself) and counts closed watches back."""
    c = make_cluster(replication=1, shards=1)
    channels = [grpc.insecure_channel(c.coordinator) for _ in range(4)]
    stubs = [cpb_grpc.CoordinatorStub(ch) for ch in channels]
    streams = []
    for i in range(230):
        s = stubs[i % 4]
        if i % 2:
            streams.append(s.WatchRing(cpb.WatchRingRequest(after_epoch=0)))
        else:
            streams.append(s.WatchModels(cpb.WatchModelsRequest(after_generation=0)))
    try:
        wait_for("the streams past the limit to be refused",
                 lambda: sum(1 for s in streams if s.done()) >= 30, timeout=30)
        done = [s for s in streams if s.done()]
        assert len(streams) - len(done) <= 200  # the default --max-watchers
        for s in done:
            assert s.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (s.code(), s.details())
            # the coordinator's --max-watchers, or the rpc layer's stream cap just above it
            assert "limit" in s.details(), s.details()
        # registry changes: every unread WatchModels gets updates it never reads
        big = json.dumps(dict(TINY_CONFIG, name="tiny", padding="p" * (200 << 10)))
        stub = coordinator_stub(c)
        for _ in range(2):
            stub.RegisterModel(cpb.RegisterModelRequest(model=tiny_info(config_json=big)),
                               timeout=30)
        c.start_shard("shard-2")  # a registration and a ring change: every WatchRing writes
        wait_for("shard-2 registered", lambda: "shard-2" in c.nodes())
        assert c.wait_alive(["shard-1", "shard-2"])
        assert c.ok("status")["epoch"] >= 2
    finally:
        for s in streams:
            s.cancel()
    # the slots come back once the cancelled watches notice
    def watch_once():
        it = stubs[0].WatchRing(cpb.WatchRingRequest(after_epoch=0))
        try:
            return next(it)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            return None
        finally:
            it.cancel()
    assert wait_for("a watch after the others closed", watch_once, timeout=30).epoch >= 2
    for ch in channels:
        ch.close()
    assert c.procs["coordinator"].alive()


def test_a_hung_shard_and_registering_clients_do_not_starve_heartbeats(make_cluster):
    """Before, RegisterNode ran on the coordinator's rpc workers, and each registration of
    a new shard asked every ring shard what it holds (up to 2.5 s from one that hangs):
    four clients registering in a loop held every worker, heartbeats waited seconds, and
    a live replica was declared dead. The slow methods run on threads of their own now."""
    c = make_cluster(replication=1, shards=0, heartbeat_ms=500)
    silent = socket.socket()  # a hung host: connections complete, nothing ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(256)
    stub = coordinator_stub(c)
    stop = threading.Event()

    def register_in_a_loop(k):
        s = coordinator_stub(c)
        while not stop.is_set():
            try:
                s.RegisterNode(cpb.RegisterRequest(node=cpb.NodeInfo(
                    id=f"new-{k}", addr="127.0.0.1:7")), timeout=30)
            except grpc.RpcError:
                pass

    threads = [threading.Thread(target=register_in_a_loop, args=(k,)) for k in range(4)]
    try:
        stub.AddNode(cpb.AddNodeRequest(node=cpb.NodeInfo(
            id="hung", addr="127.0.0.1:%d" % silent.getsockname()[1])), timeout=30)
        stub.RegisterNode(cpb.RegisterRequest(node=cpb.NodeInfo(
            id="r1", addr="127.0.0.1:9", role=cpb.ROLE_SERVE)), timeout=10)
        for t in threads:
            t.start()
        time.sleep(1)  # every registration is asking the hung shard by now
        worst, end = 0.0, time.monotonic() + 6
        while time.monotonic() < end:
            t0 = time.monotonic()
            stub.Heartbeat(cpb.HeartbeatRequest(id="r1"), timeout=10)
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            if t.is_alive() or t.ident:
                t.join()
        silent.close()
    assert worst < 1.0, f"a heartbeat waited {worst:.2f} s behind the registrations"
    log = c.procs["coordinator"].log()
    assert "node r1 (serve" not in log or ") is dead" not in log, log[-3000:]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_idle_watchers_share_one_copy_of_the_registry(make_cluster):
    """Before, each WatchModels stream unpacked and packed a copy of the registry of its
    own, and one that was not read held both while its write waited: 30 idle watchers of
    an 8 MiB registry took about 500 MiB. They share one packed copy now."""
    c = make_cluster(replication=1, shards=1)
    stub = coordinator_stub(c)
    for i in range(8):  # a registry of about 8 MiB
        big = json.dumps(dict(TINY_CONFIG, name=f"big{i}", padding="p" * (1000 << 10)))
        stub.RegisterModel(cpb.RegisterModelRequest(model=tiny_info(f"big{i}", config_json=big)),
                           timeout=60)
    pid = c.procs["coordinator"].proc.pid
    before = rss_mib(pid)
    big_messages = [("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.insecure_channel(c.coordinator, options=big_messages) for _ in range(30)]
    streams = [cpb_grpc.CoordinatorStub(ch).WatchModels(cpb.WatchModelsRequest(after_generation=0))
               for ch in channels]  # never read
    try:
        time.sleep(3)
        stub.RegisterModel(cpb.RegisterModelRequest(model=tiny_info("small")), timeout=60)
        time.sleep(3)  # every watcher woke to the new generation
        grown = rss_mib(pid) - before
        assert grown < 120, f"30 idle watchers took {grown:.0f} MiB"
        assert stub.GetRing(cpb.GetRingRequest(), timeout=10).epoch >= 1
    finally:
        for st in streams:
            st.cancel()
        for ch in channels:
            ch.close()


# ================================================================ liveness log ===

def test_death_and_return_are_logged(make_cluster):
    c = make_cluster(replication=1, shards=2)
    shard = c.procs["shard-2"].proc
    shard.send_signal(signal.SIGSTOP)
    try:
        wait_for("shard-2 dead", lambda: not c.nodes()["shard-2"]["alive"])
    finally:
        shard.send_signal(signal.SIGCONT)
    wait_for("shard-2 back", lambda: c.nodes()["shard-2"]["alive"])
    log = c.procs["coordinator"].log()
    assert "node shard-2 (shard at " in log and ") is dead: no heartbeat for" in log, log[-2000:]
    assert "node shard-2 (shard at " in log and ") is back: a heartbeat after" in log, log[-2000:]
