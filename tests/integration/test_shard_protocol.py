"""The shard and coordinator protocols, driven directly with grpcio against real
processes: placement checks (a shard refuses keys it does not own with ABORTED and a
message saying to refresh the ring), pushes validated before anything changes,
versions that are update sequence numbers and never go backwards across a restart,
the shard's incarnation in every answer, ordered update streams with the previous
version of each chunk, resync when a subscriber falls behind the log or names another
incarnation, keepalives on idle streams, Stat, Delete, Health, and ring epochs streamed by
WatchRing. (Hostile clients: test_shard_hostile.py.)"""
import os
import pathlib
import signal
import struct
import subprocess
import tempfile
import threading
import time

import grpc
import pytest

from conftest import BUILD, run_psctl, sanitizer_report  # conftest also generates the stubs

import coordinator_pb2 as cpb  # noqa: E402
import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402
import ps_pb2_grpc as pb_grpc  # noqa: E402

BIG_MESSAGES = [("grpc.max_receive_message_length", 100 << 20),
                ("grpc.max_send_message_length", 100 << 20)]


def start(tmp, name, argv, preexec_fn=None):
    """Starts a server that writes its port to a file; returns (Popen, address).
    preexec_fn runs in the child before exec (limits a test imposes)."""
    port_file = pathlib.Path(tmp) / f"{name}.port"
    if port_file.exists():
        port_file.unlink()
    log = open(pathlib.Path(tmp) / f"{name}.log", "a")
    p = subprocess.Popen([str(a) for a in argv] + ["--port-file", str(port_file)],
                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return p, f"127.0.0.1:{int(port_file.read_text())}"
        assert p.poll() is None, f"{name} exited at start-up:\n{log_text(tmp, name)}"
        time.sleep(0.02)
    raise AssertionError(f"{name} did not start")


def log_text(tmp, name):
    return (pathlib.Path(tmp) / f"{name}.log").read_text()


def stop_all(tmp, procs):
    """SIGTERM every process; each must exit 0 and its log hold no sanitizer report."""
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for name, p in procs:
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "killed after 20 s"
        assert rc == 0, f"{name} exited with {rc}:\n{log_text(tmp, name)[-3000:]}"
        report = sanitizer_report(log_text(tmp, name))
        assert report is None, f"sanitizer report from {name}:\n{report}"


def start_coordinator(tmp, replication=1):
    """A coordinator; R = 1 by default here: these tests pin the single-owner protocol
    (test_replication.py tests R = 2)."""
    return start(tmp, "coord", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                "--state-dir", pathlib.Path(tmp) / "st", "--heartbeat-ms", "200",
                                "--replication", str(replication)])


def start_shard(tmp, coord, sid, *flags):
    return start(tmp, sid, [BUILD / "ps" / "ps-shard", "--id", sid, "--coordinator", coord, *flags])


def wait_ring(c, ids, timeout=20):
    """Waits until every id is on the ring; returns its epoch."""
    deadline = time.monotonic() + timeout
    while True:
        ring = c.GetRing(cpb.GetRingRequest())
        if set(ids) <= {n.id for n in ring.nodes if n.in_ring}:
            return ring.epoch
        assert time.monotonic() < deadline, f"{ids} not all on the ring: {ring}"
        time.sleep(0.02)


def shard_stub(addr):
    return pb_grpc.ParameterServerStub(grpc.insecure_channel(addr, options=BIG_MESSAGES))


@pytest.fixture
def cluster():
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        p, coord = start_coordinator(tmp)
        procs.append(("coord", p))
        shards = {}
        for i in (1, 2, 3):
            p, addr = start_shard(tmp, coord, f"shard-{i}", "--log-mb", "1")
            procs.append((f"shard-{i}", p))
            shards[f"shard-{i}"] = addr
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        wait_ring(c, shards)
        yield c, shards, tmp
        stop_all(tmp, procs)


def stubs(shards):
    return {sid: shard_stub(a) for sid, a in shards.items()}


def owner_of(key, shards, epoch):
    """Pushes ASSIGN to every shard: exactly one owns the key, the others refuse."""
    owners = []
    for sid, s in stubs(shards).items():
        try:
            s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], values=struct.pack("<2f", 1, 2)))
            owners.append(sid)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ABORTED
            assert "refresh the ring" in e.details() and f"{key:016x}" in e.details()
    assert len(owners) == 1, owners
    return owners[0]


def owner_of_quiet(key, s, epoch):
    """True when shard stub `s` owns `key` (probed with a Pull: NOT_FOUND = owned, absent)."""
    try:
        s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
        return True
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.NOT_FOUND


def test_placement_is_checked(cluster):
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    seen = set()
    for key in range(1, 40):
        seen.add(owner_of(key * 0x9E3779B97F4A7C15 % (1 << 64), shards, epoch))
    assert seen == set(shards), "every shard owns some keys"


def test_push_validation_changes_nothing(cluster):
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    key = 42
    s = stubs(shards)[owner_of(key, shards, epoch)]
    before = s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
    bad = [
        (dict(keys=[key], lengths=[3], values=b"\0" * 8), "lengths add up"),
        (dict(keys=[key], lengths=[2], op=pb.PUSH_ADD, values=struct.pack("<2f", float("nan"), 1)), "NaN"),
        (dict(keys=[key], lengths=[2], op=pb.PUSH_ADD, values=struct.pack("<2f", float("inf"), 1)), "infinite"),
        (dict(keys=[key], lengths=[3], op=pb.PUSH_ADD, values=b"\0" * 12), "holds 2 floats"),
        (dict(keys=[key, 7], lengths=[2], values=b"\0" * 8), "lengths"),
        (dict(keys=[key], lengths=[0], values=b""), "length 0"),
        (dict(keys=[key, key], lengths=[2, 2], values=b"\0" * 16), "more than once"),
    ]
    for req, words in bad:
        with pytest.raises(grpc.RpcError) as e:
            s.Push(pb.PushRequest(epoch=epoch, **req))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert words in e.value.details()
    k2 = next(k for k in range(1000, 2000) if owner_of_quiet(k, s, epoch))
    with pytest.raises(grpc.RpcError) as e:  # ADD to a key nobody assigned
        s.Push(pb.PushRequest(epoch=epoch, keys=[k2], lengths=[1], op=pb.PUSH_ADD, values=b"\0" * 4))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        s.Pull(pb.PullRequest(epoch=epoch, keys=[k2]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert s.Pull(pb.PullRequest(epoch=epoch, keys=[key])) == before


def test_versions_are_seqs_and_every_answer_names_the_incarnation(cluster):
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    key = 4343
    s = stubs(shards)[owner_of(key, shards, epoch)]
    health = s.Health(pb.HealthRequest())
    inc = health.incarnation
    assert inc != 0
    # the seq started at the wall clock in microseconds, not at 0
    assert health.seq > 1_600_000_000 * 10**6
    r = s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_ADD,
                              values=struct.pack("<2f", 1, 1)))
    assert r.incarnation == inc and r.versions == [r.seq]
    pulled = s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
    assert pulled.incarnation == inc and pulled.versions == [r.seq] and pulled.seq >= r.seq
    k2 = next(k for k in range(5000, 6000) if owner_of_quiet(k, s, epoch))
    st = s.Stat(pb.StatRequest(epoch=epoch, keys=[key, k2]))
    assert st.incarnation == inc
    assert list(st.lengths) == [2, 0] and list(st.versions) == [r.seq, 0]
    other = next(a for sid, a in shards.items() if not owner_of_quiet(key, shard_stub(a), epoch))
    with pytest.raises(grpc.RpcError) as e:  # Stat checks placement like Pull
        shard_stub(other).Stat(pb.StatRequest(epoch=epoch, keys=[key]))
    assert e.value.code() == grpc.StatusCode.ABORTED and "refresh the ring" in e.value.details()


def test_subscribe_streams_updates_in_order_and_resyncs(cluster):
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    key = 4242
    sid = owner_of(key, shards, epoch)
    s = stubs(shards)[sid]
    health = s.Health(pb.HealthRequest())
    seq0, inc = health.seq, health.incarnation
    pushed = []
    for i in range(5):
        pushed.append(s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_ADD,
                                            values=struct.pack("<2f", i, -i))).versions[0])
    it = s.Subscribe(pb.SubscribeRequest(from_seq=seq0, incarnation=inc), timeout=30)
    got = [next(it) for _ in range(5)]
    it.cancel()
    assert [u.seq for u in got] == list(range(seq0 + 1, seq0 + 6))
    assert [u.version for u in got] == pushed == [u.seq for u in got]
    assert [u.prev_version for u in got[1:]] == pushed[:-1]  # each ADD onto the one before
    # an ADD streams what the chunk became (the shard computed the sums once)
    assert all(u.op == pb.PUSH_ASSIGN and u.key == key and u.incarnation == inc for u in got)
    assert not any(u.resync or u.keepalive for u in got)
    assert struct.unpack("<2f", got[3].values) == (1.0 + 6, 2.0 - 6)
    pulled = s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
    assert pulled.versions == [pushed[-1]] and struct.unpack("<2f", pulled.values) == (11.0, -8.0)

    # overrun the 1 MiB log: a subscriber from seq0 must be told to resync
    big = 64 * 1024  # floats: 256 KiB per push
    big_key = next(k for k in range(10000, 20000) if owner_of_quiet(k, s, epoch))
    for _ in range(6):
        s.Push(pb.PushRequest(epoch=epoch, keys=[big_key], lengths=[big], values=b"\0" * (4 * big)),
               timeout=10)
    last = s.Health(pb.HealthRequest()).seq
    it = s.Subscribe(pb.SubscribeRequest(from_seq=seq0), timeout=30)
    first = next(it)
    it.cancel()
    assert first.resync and first.seq == last and first.incarnation == inc


def test_another_incarnation_gets_a_resync_first(cluster):
    c, shards, _ = cluster
    s = stubs(shards)["shard-1"]
    health = s.Health(pb.HealthRequest())
    it = s.Subscribe(pb.SubscribeRequest(from_seq=health.seq, incarnation=health.incarnation ^ 1),
                     timeout=30)
    first = next(it)
    it.cancel()
    assert first.resync and first.seq == health.seq and first.incarnation == health.incarnation


def test_idle_stream_gets_keepalives(cluster):
    c, shards, _ = cluster
    s = stubs(shards)["shard-2"]
    health = s.Health(pb.HealthRequest())
    it = s.Subscribe(pb.SubscribeRequest(from_seq=health.seq, incarnation=health.incarnation),
                     timeout=30)
    got = [next(it), next(it)]  # SHARD_KEEPALIVE_MS apart; the deadline only bounds a hang
    it.cancel()
    for u in got:
        assert u.keepalive and not u.resync
        assert u.seq == health.seq and u.incarnation == health.incarnation


def test_health_counts_subscribers(cluster):
    c, shards, _ = cluster
    s = stubs(shards)["shard-3"]
    health = s.Health(pb.HealthRequest())
    assert health.id == "shard-3" and health.subscribers == 0
    page = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert health.max_bytes == page // 2  # the default quota: half the machine's memory
    it = s.Subscribe(pb.SubscribeRequest(from_seq=health.seq), timeout=30)
    deadline = time.monotonic() + 10
    while s.Health(pb.HealthRequest()).subscribers != 1:
        assert time.monotonic() < deadline, "the open stream is not counted"
        time.sleep(0.02)
    it.cancel()
    while s.Health(pb.HealthRequest()).subscribers != 0:
        assert time.monotonic() < deadline, "the closed stream is still counted"
        time.sleep(0.02)


def test_request_id_memory_is_bounded_and_says_how_far_back_it_reaches(tmp_path):
    """ps-shard --dedup-mb 1 remembers 131072 keys of recent requests: pushes of more
    keys than that forget the oldest request (a retry of it would apply again); Health
    says the bound, the keys, how far back the memory reaches and how many requests were
    forgotten younger than 30 s, and the log warns to raise --dedup-mb."""
    tmp = str(tmp_path)
    shard = str(BUILD / "ps" / "ps-shard")
    for bad in ("0", "-1", "1048577", " 5", "1e3"):  # refused before anything starts
        r = subprocess.run([shard, "--id", "x", "--dedup-mb", bad], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and "--dedup-mb" in r.stderr, (bad, r.returncode, r.stderr)
    procs = []
    try:
        p, coord = start_coordinator(tmp)
        procs.append(("coord", p))
        p, addr = start_shard(tmp, coord, "shard-1", "--dedup-mb", "1")
        procs.append(("shard-1", p))
        epoch = wait_ring(cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord)), ["shard-1"])
        s = shard_stub(addr)
        h = s.Health(pb.HealthRequest())
        assert (h.dedup_max_keys, h.dedup_keys, h.dedup_forgotten) == (131072, 0, 0), h
        n = 50000
        for rid in (11, 12, 13):  # 150000 keys: the first request is forgotten
            keys = list(range(rid * 1000000, rid * 1000000 + n))
            s.Push(pb.PushRequest(epoch=epoch, keys=keys, lengths=[1] * n,
                                  values=struct.pack(f"<{n}f", *([1.0] * n)), request_id=rid,
                                  first_try=True))
        h = s.Health(pb.HealthRequest())
        assert h.dedup_forgotten == 1 and h.dedup_forgotten_young == 1, h
        assert h.dedup_keys == 2 * n and 0 < h.dedup_window_ms < 30000, h
        # the forgotten request, sent again, applies again (what the warning is about);
        # a remembered one does not
        for rid, want in ((11, 2.0), (13, 1.0)):
            key = rid * 1000000
            s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[1], op=pb.PUSH_ADD,
                                  values=struct.pack("<f", 1.0), request_id=rid))
            got = s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
            assert struct.unpack("<f", got.values)[0] == want, (rid, got)
        assert "reaches back only" in log_text(tmp, "shard-1")
        r = run_psctl("status", coordinator=coord, json_mode=False)  # the operator sees it
        assert r.rc == 0 and "shard shard-1 remembers the request ids" in r.err, r.err
        assert "raise its --dedup-mb" in r.err, r.err
    finally:
        stop_all(tmp, procs)


def test_restart_draws_a_new_incarnation_and_versions_go_on(tmp_path):
    """A restarted shard must not start versions again at 1: a replica would ignore its
    updates or apply deltas onto stale values (issue 6, defect 7)."""
    tmp = str(tmp_path)
    procs = []
    try:
        p, coord = start_coordinator(tmp)
        procs.append(("coord", p))
        p, addr = start_shard(tmp, coord, "shard-1")
        procs.append(("shard-1", p))
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        epoch = wait_ring(c, ["shard-1"])
        s = shard_stub(addr)
        first = s.Push(pb.PushRequest(epoch=epoch, keys=[1, 2], lengths=[1, 1], values=b"\0" * 8))
        stop_all(tmp, [procs.pop()])
        p, addr = start_shard(tmp, coord, "shard-1")
        procs.append(("shard-1", p))
        s = shard_stub(addr)
        again = s.Push(pb.PushRequest(epoch=epoch, keys=[1, 2], lengths=[1, 1], values=b"\0" * 8))
        assert again.incarnation != first.incarnation and again.incarnation != 0
        assert min(again.versions) > max(first.versions)
        assert s.Health(pb.HealthRequest()).incarnation == again.incarnation
    finally:
        stop_all(tmp, procs)


def test_watch_ring_streams_new_epochs(cluster):
    c, shards, tmp = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    seen = []
    it = c.WatchRing(cpb.WatchRingRequest(after_epoch=epoch))

    def read():
        for r in it:
            seen.append(r)
            return

    t = threading.Thread(target=read)
    t.start()
    c.AddNode(cpb.AddNodeRequest(node=cpb.NodeInfo(id="shard-9", addr="127.0.0.1:1", weight=2)))
    t.join(timeout=10)
    it.cancel()
    assert seen and seen[0].epoch == epoch + 1
    assert any(n.id == "shard-9" and n.in_ring and not n.alive for n in seen[0].nodes)
    # the new member never ran (so it holds nothing): removing it by force is allowed;
    # removing a loaded shard is not
    c.RemoveNode(cpb.RemoveNodeRequest(id="shard-9", force=True))
    key = 77
    owner_of(key, shards, c.GetRing(cpb.GetRingRequest()).epoch)
    loaded = [sid for sid, s in stubs(shards).items() if s.Health(pb.HealthRequest()).keys > 0]
    with pytest.raises(grpc.RpcError) as e:
        c.RemoveNode(cpb.RemoveNodeRequest(id=loaded[0]))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "holds" in e.value.details()


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_processes_do_not_spin():
    """An idle cluster must sleep, not poll: a wait computed wrong once made the
    coordinator burn a third of a core doing nothing (at the default 1 s heartbeat).
    Idle costs well under 5% here; the bound is 25% of one core, so only a busy loop
    trips it."""
    with tempfile.TemporaryDirectory() as tmp:
        coord, addr = start(tmp, "coord", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                           "--state-dir", pathlib.Path(tmp) / "st"])
        shard, _ = start(tmp, "shard-1", [BUILD / "ps" / "ps-shard", "--id", "shard-1",
                                          "--coordinator", addr])
        try:
            time.sleep(0.5)
            before = {p.pid: cpu_seconds(p.pid) for p in (coord, shard)}
            time.sleep(2)
            for p in (coord, shard):
                used = cpu_seconds(p.pid) - before[p.pid]
                assert used < 0.5, f"{p.args[0]} used {used:.2f} s of CPU in 2 s idle"
        finally:
            for p in (shard, coord):
                p.send_signal(signal.SIGTERM)
            for p in (shard, coord):
                assert p.wait(timeout=20) == 0


def test_register_model_checks_the_graph(cluster):
    """The registry refuses a model no replica could load: a config that does not
    parse, names another model, or disagrees with the tensors' shapes."""
    c, _, _ = cluster
    config = (pathlib.Path(__file__).resolve().parents[2] / "models" / "digits_mlp" /
              "config.json").read_text()

    def model(cfg, w1=(64, 64), name="digits_mlp"):
        shapes = {"fc1.weight": w1, "fc1.bias": (64,), "fc2.weight": (10, 64), "fc2.bias": (10,)}
        return cpb.ModelInfo(name=name, config_json=cfg, tensors=[
            cpb.TensorInfo(name=n, dtype="FP32", shape=list(s), chunk_floats=65536, chunks=1)
            for n, s in shapes.items()])

    for bad, words in [(model("{}"), "digits_mlp"), (model("not json"), "digits_mlp"),
                       (model(config, w1=(64, 63)), "fc1.weight"),
                       (model(config, name="other"), "names the model")]:
        with pytest.raises(grpc.RpcError) as e:
            c.RegisterModel(cpb.RegisterModelRequest(model=bad))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert words in e.value.details(), e.value.details()
    assert c.RegisterModel(cpb.RegisterModelRequest(model=model(config))).version == 1
    assert [m.name for m in c.ListModels(cpb.ListModelsRequest()).models] == ["digits_mlp"]


def test_delete_frees_chunks_and_checks_placement(cluster):
    """Delete frees the chunks it holds (Pull says NOT_FOUND, Stat length 0, Health's
    keys and bytes drop), skips keys it does not hold so a retry is harmless, lets a key
    be assigned again, and refuses keys the shard does not own like a Pull."""
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    s = stubs(shards)["shard-1"]
    spread = [i * 0x9E3779B97F4A7C15 % (1 << 64) for i in range(100, 400)]  # all over the ring
    owned = [k for k in spread if owner_of_quiet(k, s, epoch)]
    mine, absent = owned[:4], owned[4]  # absent: owned, never pushed
    theirs = next(k for k in spread if k not in owned)
    s.Push(pb.PushRequest(epoch=epoch, keys=mine, lengths=[2, 3, 4, 5],
                          values=struct.pack("<14f", *range(14))))
    before = s.Health(pb.HealthRequest())
    inc = before.incarnation

    gone, kept = mine[:2], mine[2:]
    r = s.Delete(pb.DeleteRequest(epoch=epoch, keys=gone + [absent]))
    assert (r.deleted, r.bytes, r.incarnation) == (2, 4 * (2 + 3), inc)
    after = s.Health(pb.HealthRequest())
    assert after.keys == before.keys - 2 and after.bytes == before.bytes - 20
    assert after.seq == before.seq  # a delete is not an update
    for k in gone:
        with pytest.raises(grpc.RpcError) as e:
            s.Pull(pb.PullRequest(epoch=epoch, keys=[k]))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    st = s.Stat(pb.StatRequest(epoch=epoch, keys=mine))
    assert list(st.lengths) == [0, 0, 4, 5] and list(st.versions)[:2] == [0, 0]
    pulled = s.Pull(pb.PullRequest(epoch=epoch, keys=kept))
    assert struct.unpack("<9f", pulled.values) == tuple(float(v) for v in range(5, 14))

    again = s.Delete(pb.DeleteRequest(epoch=epoch, keys=gone + [absent]))  # a retry
    assert (again.deleted, again.bytes, again.incarnation) == (0, 0, inc)
    assert s.Health(pb.HealthRequest()).bytes == after.bytes

    # assigned again, with another length: a new chunk
    p = s.Push(pb.PushRequest(epoch=epoch, keys=[gone[0]], lengths=[1], values=struct.pack("<f", 7)))
    pulled = s.Pull(pb.PullRequest(epoch=epoch, keys=[gone[0]]))
    assert pulled.lengths == [1] and pulled.versions == p.versions
    assert struct.unpack("<f", pulled.values) == (7.0,)

    # one key the shard does not own refuses the whole request: nothing is freed
    held = s.Health(pb.HealthRequest())
    with pytest.raises(grpc.RpcError) as e:
        s.Delete(pb.DeleteRequest(epoch=epoch, keys=kept + [theirs]))
    assert e.value.code() == grpc.StatusCode.ABORTED
    assert "refresh the ring" in e.value.details() and f"{theirs:016x}" in e.value.details()
    assert s.Health(pb.HealthRequest()).keys == held.keys
    assert list(s.Stat(pb.StatRequest(epoch=epoch, keys=kept)).lengths) == [4, 5]

    with pytest.raises(grpc.RpcError) as e:  # the key-count limit, before anything else
        s.Delete(pb.DeleteRequest(epoch=epoch, keys=[absent] * (256 * 1024 + 1)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "keys per request" in e.value.details()
