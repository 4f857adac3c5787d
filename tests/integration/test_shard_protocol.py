"""The shard and coordinator protocols, driven directly with grpcio against real
processes: placement checks (a shard refuses keys it does not own with ABORTED and a
message saying to refresh the ring), pushes validated before anything changes,
ordered update streams, resync when a subscriber falls behind the log, and ring
epochs streamed by WatchRing."""
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

from conftest import BUILD  # this folder's conftest also generates the stubs

import coordinator_pb2 as cpb  # noqa: E402
import coordinator_pb2_grpc as cpb_grpc  # noqa: E402
import ps_pb2 as pb  # noqa: E402
import ps_pb2_grpc as pb_grpc  # noqa: E402


def start(tmp, name, argv):
    port_file = pathlib.Path(tmp) / f"{name}.port"
    log = open(pathlib.Path(tmp) / f"{name}.log", "w")
    p = subprocess.Popen([str(a) for a in argv] + ["--port-file", str(port_file)],
                         stdout=log, stderr=subprocess.STDOUT)
    for _ in range(1000):
        if port_file.exists() and port_file.read_text().strip():
            return p, f"127.0.0.1:{int(port_file.read_text())}"
        assert p.poll() is None, f"{name} exited at start-up"
        time.sleep(0.02)
    raise AssertionError(f"{name} did not start")


@pytest.fixture
def cluster():
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        p, coord = start(tmp, "coord", [BUILD / "ps" / "ps-coordinator", "--listen", "127.0.0.1:0",
                                        "--state-dir", pathlib.Path(tmp) / "st", "--heartbeat-ms", "200"])
        procs.append(p)
        shards = {}
        for i in (1, 2, 3):
            p, addr = start(tmp, f"shard-{i}", [BUILD / "ps" / "ps-shard", "--id", f"shard-{i}",
                                                 "--coordinator", coord, "--log-mb", "1"])
            procs.append(p)
            shards[f"shard-{i}"] = addr
        c = cpb_grpc.CoordinatorStub(grpc.insecure_channel(coord))
        for _ in range(100):
            if c.GetRing(cpb.GetRingRequest()).epoch >= 3:
                break
            time.sleep(0.02)
        yield c, shards, tmp
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=20) == 0


def stubs(shards):
    return {sid: pb_grpc.ParameterServerStub(grpc.insecure_channel(a)) for sid, a in shards.items()}


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
    ]
    for req, words in bad:
        with pytest.raises(grpc.RpcError) as e:
            s.Push(pb.PushRequest(epoch=epoch, **req))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert words in e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # ADD to a key nobody assigned
        k2 = next(k for k in range(1000, 2000) if owner_of_quiet(k, s, epoch))
        s.Push(pb.PushRequest(epoch=epoch, keys=[k2], lengths=[1], op=pb.PUSH_ADD, values=b"\0" * 4))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        s.Pull(pb.PullRequest(epoch=epoch, keys=[k2]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert s.Pull(pb.PullRequest(epoch=epoch, keys=[key])) == before


def owner_of_quiet(key, s, epoch):
    """True when shard stub `s` owns `key` (probed with a Pull: NOT_FOUND = owned, absent)."""
    try:
        s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
        return True
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.NOT_FOUND


def test_subscribe_streams_updates_in_order_and_resyncs(cluster):
    c, shards, _ = cluster
    epoch = c.GetRing(cpb.GetRingRequest()).epoch
    key = 4242
    sid = owner_of(key, shards, epoch)
    s = stubs(shards)[sid]
    seq0 = s.Health(pb.HealthRequest()).seq
    for i in range(5):
        s.Push(pb.PushRequest(epoch=epoch, keys=[key], lengths=[2], op=pb.PUSH_ADD,
                              values=struct.pack("<2f", i, -i)))
    it = s.Subscribe(pb.SubscribeRequest(from_seq=seq0))
    got = [next(it) for _ in range(5)]
    it.cancel()
    assert [u.seq for u in got] == list(range(seq0 + 1, seq0 + 6))
    assert [u.version for u in got] == list(range(2, 7))
    assert all(u.op == pb.PUSH_ADD and u.key == key for u in got)
    assert struct.unpack("<2f", got[3].values) == (3.0, -3.0)
    pulled = s.Pull(pb.PullRequest(epoch=epoch, keys=[key]))
    assert pulled.versions == [6] and struct.unpack("<2f", pulled.values) == (11.0, -8.0)

    # overrun the 1 MiB log: a subscriber from seq0 must be told to resync
    big = 64 * 1024  # floats: 256 KiB per push
    big_key = next(k for k in range(10000, 20000) if owner_of_quiet(k, s, epoch))
    for _ in range(6):
        s.Push(pb.PushRequest(epoch=epoch, keys=[big_key], lengths=[big], values=b"\0" * (4 * big)),
               timeout=10)
    it = s.Subscribe(pb.SubscribeRequest(from_seq=seq0))
    first = next(it)
    it.cancel()
    assert first.resync


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
    # the new member holds nothing: removing it is allowed; removing a loaded shard is not
    c.RemoveNode(cpb.RemoveNodeRequest(id="shard-9"))
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
