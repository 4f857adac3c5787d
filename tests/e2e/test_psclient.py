"""psclient, the Python client (ps/client/python), against real coordinators and shards
on loopback ports: keys and placement agree with the C side bit for bit (pinned to the
values of tests/unit/test_agreement.c, and checked against where psctl put every
chunk); pulls give back what psctl uploaded; assign/add round trips, also of a tensor
cut into several requests per shard; a client whose ring is stale has its refused
requests, and only those, sent again (an ADD lands exactly once); bad arguments are
refused before anything is sent. The optimizer and sparse-row tests skip until the
shards serve PUSH_OPTIMIZE and PullRows/PushRows (they ask the shards at run time).
"""
import grpc
import numpy as np
import pytest

from psclient_support import (DENSE_KEYS, PLACEMENT, ROW_KEYS, TABLES, TRAINING, Reference,
                              RowsReference, ScriptedOp, assert_close, coordinator_stub, cpb,
                              dense_config, initial_row, integration, params_of, pb, psclient,
                              register, require_training_side, serialize, shard_stub,
                              wait_shard_epochs)
from psclient import discovery, routing, train_config
from psclient.registry import Registry
from psclient.ring import Ring

make_cluster = integration.make_cluster  # a fixture: clusters for one test


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three shards shared by the tests that do not change the ring."""
    c = integration.Cluster(tmp_path_factory.mktemp("cluster"), shards=3)
    yield c
    reports = c.stop()
    assert not reports, "sanitizer reports in server logs:\n" + "\n".join(reports)


# ================================================================ keys and placement ===

def test_keys_and_placement_match_the_c_side():
    for model, version, tensor, chunk, want in DENSE_KEYS:
        assert psclient.key_dense(model, version, tensor, chunk) == want, (model, tensor, chunk)
    for model, table, row, want in ROW_KEYS:
        assert psclient.key_row(model, table, row) == want, (model, table, row)
    members = [("shard-3", "127.0.0.1:3", 2), ("shard-1", "127.0.0.1:1", 1),
               ("shard-2", "127.0.0.1:2", 1)]
    ring = Ring.parse(serialize(7, 1000, members))  # insertion order must not matter
    assert ring.epoch == 7 and [m.id for m in ring.members] == ["shard-1", "shard-2", "shard-3"]
    keys = np.array([k for _, k, _ in PLACEMENT], dtype=np.uint64)
    primaries = ring.primaries(keys)
    for (chunk, key, owners), primary in zip(PLACEMENT, primaries):
        assert psclient.key_dense("digits_mlp", 1, "fc1.weight", chunk) == key
        got = tuple(ring.members[i].id for i in ring.owners(key, 3))
        assert got == owners, f"chunk {chunk}: owners {got}, C says {owners}"
        assert ring.members[int(primary)].id == owners[0]
    for bad in [b"", b"PSRG", serialize(1, 1000, members)[:-1], serialize(1, 1000, members) + b"x",
                serialize(1, 0, members), b"XXXX" + serialize(1, 1000, members)[4:]]:
        with pytest.raises(ValueError):
            Ring.parse(bad)


def test_every_chunk_psctl_uploads_is_where_the_python_ring_says(cluster, tmp_path):
    """psctl (the C client) uploads in chunks of 8 floats; the shard the Python ring
    names holds each chunk (Stat), so both sides place keys alike."""
    tensors = integration.tiny_tensors(seed=3)
    d = integration.write_model(tmp_path / "placed", dict(integration.TINY_CONFIG, name="placed"),
                                tensors)
    cluster.ok("model", "upload", d, "--chunk-floats", "8")
    with psclient.Client(cluster.coordinator) as c:
        ring = c._router.ring
        assert {m.id for m in ring.members} == {"shard-1", "shard-2", "shard-3"}
        owners_seen = set()
        for name, values in tensors.items():
            chunks = -(-values.size // 8)
            keys = [psclient.key_dense("placed", 1, name, i) for i in range(chunks)]
            for key, owner in zip(keys, ring.primaries(np.array(keys, dtype=np.uint64))):
                m = ring.members[int(owner)]
                st = shard_stub(m.addr).Stat(pb.StatRequest(epoch=ring.epoch, keys=[key]),
                                             timeout=10)
                assert st.lengths[0] > 0, f"{m.id} does not hold {name} key {key:016x}"
                owners_seen.add(m.id)
        assert owners_seen == {"shard-1", "shard-2", "shard-3"}


# ================================================================ pull, assign, add ===

def test_pull_gives_back_the_uploaded_sample_model(cluster, sample_model):
    cluster.ok("model", "upload", sample_model, "--chunk-floats", "1000")
    want = integration.read_safetensors(sample_model / "1" / "model.safetensors")
    with psclient.Client(cluster.coordinator) as c:
        assert ("digits_mlp", 1) in c.models()
        for name, values in want.items():
            for version in (None, 1):
                got = c.pull("digits_mlp", name, version=version)
                assert got.dtype == np.float32 and got.shape == values.shape, name
                assert np.array_equal(got, values), name


sample_model = integration.sample_model  # a fixture: models/digits_mlp


def test_assign_and_add_round_trip(cluster, tmp_path):
    d = integration.write_model(tmp_path / "rt", dict(integration.TINY_CONFIG, name="rt"),
                                integration.tiny_tensors(seed=4))
    cluster.ok("model", "upload", d, "--chunk-floats", "16")
    rng = np.random.default_rng(5)
    with psclient.Client(cluster.coordinator) as c:
        w = rng.standard_normal((50, 4)).astype(np.float32)
        c.assign("rt", "fc1.weight", w)
        assert np.array_equal(c.pull("rt", "fc1.weight"), w)
        delta = rng.standard_normal(200).astype(np.float32)  # flat is fine too
        c.add("rt", "fc1.weight", delta, version=1)
        assert np.array_equal(c.pull("rt", "fc1.weight", version=1), w + delta.reshape(50, 4))
        b = rng.standard_normal(3)  # float64 in, float32 stored
        c.assign("rt", "fc2.bias", b)
        assert np.array_equal(c.pull("rt", "fc2.bias"), b.astype(np.float32))


def test_a_write_given_the_same_request_id_lands_once(cluster, tmp_path):
    """A caller that retries a write that raised passes the write's request id again:
    the shards apply each chunk or row of it once, also when every call of the retry is
    looked up (none is a first try); another id is another write."""
    d = integration.write_model(tmp_path / "rid", dict(integration.TINY_CONFIG, name="rid"),
                                integration.tiny_tensors(seed=6))
    cluster.ok("model", "upload", d, "--chunk-floats", "16")
    with psclient.Client(cluster.coordinator) as c:
        want = c.pull("rid", "fc1.weight")
        one = np.float32(1)

        def added(times):  # float32 sums in the shards' order
            for _ in range(times):
                want[...] = want + one
            return want

        rid = psclient.new_request_id()
        delta = np.ones(200, np.float32)
        c.add("rid", "fc1.weight", delta, request_id=rid)
        c.add("rid", "fc1.weight", delta, request_id=rid)  # the same write again: a no-op
        assert np.array_equal(c.pull("rid", "fc1.weight"), added(1))
        c.add("rid", "fc1.weight", delta, request_id=np.uint64(rid ^ 1))  # another write
        assert np.array_equal(c.pull("rid", "fc1.weight"), added(1))
        c.add("rid", "fc1.weight", delta)  # no id given: a fresh one each time
        c.add("rid", "fc1.weight", delta)
        assert np.array_equal(c.pull("rid", "fc1.weight"), added(2))
        with psclient.Client(cluster.coordinator) as other:  # another client, same id
            other.add("rid", "fc1.weight", delta, request_id=rid)
        assert np.array_equal(c.pull("rid", "fc1.weight"), want)
        sent = c._router.requests_sent
        for bad in (0, -1, 2 ** 64, 1.5, "7", True):
            with pytest.raises(ValueError) as e:
                c.add("rid", "fc1.weight", delta, request_id=bad)
            assert "request_id must be an integer" in str(e.value), bad
        assert c._router.requests_sent == sent


def test_rows_given_the_same_request_id_land_once(cluster):
    require_training_side(cluster)
    register(cluster, dense_config("ridrows", 4, 4, tables=TABLES),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 64)
    t = TABLES[0]
    ids = np.arange(500, 540, dtype=np.uint64)
    grads = np.full((len(ids), t["dim"]), 0.5, np.float32)
    with psclient.Client(cluster.coordinator) as c:
        rid = psclient.new_request_id()
        c.push_rows("ridrows", t["name"], ids, grads, request_id=rid)
        once = c.pull_rows("ridrows", t["name"], ids)
        c.push_rows("ridrows", t["name"], ids, grads, request_id=rid)
        assert np.array_equal(c.pull_rows("ridrows", t["name"], ids), once)
        c.push_rows("ridrows", t["name"], ids, grads)
        assert not np.array_equal(c.pull_rows("ridrows", t["name"], ids), once)


def test_a_tensor_cut_into_several_requests_per_shard(cluster):
    """With a 64 KiB message budget a 1 MiB tensor takes several requests per shard;
    every chunk still lands once, in its place."""
    cfg = dense_config("wide", 512, 512)
    register(cluster, cfg, {"fc.weight": (512, 512), "fc.bias": (512,)}, 1000)
    rng = np.random.default_rng(6)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    with psclient.Client(cluster.coordinator, max_request_bytes=64 << 10) as c:
        c.assign("wide", "fc.weight", w)
        sent = c._router.requests_sent
        assert sent >= 3 * 3, f"{sent} requests for 263 chunks of 4 KB over 3 shards"
        c.add("wide", "fc.weight", np.ones_like(w))
        got = c.pull("wide", "fc.weight")
        assert c._router.requests_sent - sent >= 2 * 3 * 3
    assert np.array_equal(got, w + 1)


def test_a_tensor_larger_than_one_message(make_cluster):
    """The default budget (60 MiB a message) for real: 134 MB on one shard takes three
    messages each way, within gRPC's size limits on both sides."""
    cl = make_cluster(shards=1)
    n_in, n_out = 8192, 4096  # 33.5 M floats
    register(cl, dense_config("big", n_in, n_out),
             {"fc.weight": (n_out, n_in), "fc.bias": (n_out,)}, 65536)
    w = np.arange(n_out * n_in, dtype=np.float32).reshape(n_out, n_in)
    with psclient.Client(cl.coordinator) as c:
        c.assign("big", "fc.weight", w)
        assert c._router.requests_sent == 3
        got = c.pull("big", "fc.weight")
        assert c._router.requests_sent == 6
    assert np.array_equal(got, w)


# ================================================================ ring changes ===

def test_a_stale_ring_resends_only_the_refused_requests(make_cluster):
    """Clients that routed with a 2-shard ring, after a third shard joined (the ring
    held no data yet): the shards refuse the keys they no longer own (ABORTED), the
    client fetches the ring and sends those again, and only those: an ADD whose
    requests partly succeeded lands exactly once everywhere."""
    cl = make_cluster(shards=2, replication=1)  # one copy: Health counts primaries
    register(cl, dense_config("moving", 64, 64), {"fc.weight": (64, 64), "fc.bias": (64,)}, 16)
    # one chunk a request, so that some requests succeed and others are refused
    stale_assign = psclient.Client(cl.coordinator, max_request_bytes=128)
    stale_add = psclient.Client(cl.coordinator, max_request_bytes=128)
    old_epoch = stale_add.epoch
    cl.start_shard("shard-3")
    cl.wait_alive(["shard-3"])
    nodes = cl.ok("ring", "list")
    assert nodes["epoch"] > old_epoch and len(nodes["shards"]) == 3, nodes
    wait_shard_epochs(cl, ["shard-1", "shard-2", "shard-3"], nodes["epoch"])

    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    stale_assign.assign("moving", "fc.weight", w)  # 256 chunks, ~1/3 now on shard-3
    assert stale_assign.epoch == nodes["epoch"]
    stale_add.add("moving", "fc.weight", np.ones_like(w))
    assert stale_add.epoch == nodes["epoch"]
    with psclient.Client(cl.coordinator) as fresh:
        assert np.array_equal(fresh.pull("moving", "fc.weight"), w + 1)
    keys = {i: shard_stub(cl.procs[i].addr).Health(pb.HealthRequest(), timeout=5).keys
            for i in ("shard-1", "shard-2", "shard-3")}
    assert sum(keys.values()) == 256 and keys["shard-3"] > 0, keys
    # every chunk went once; the chunks shard-3 took were refused once and sent again
    for client in (stale_assign, stale_add):
        assert client._router.requests_sent == 256 + keys["shard-3"], keys
    stale_assign.close()
    stale_add.close()


def test_a_ring_that_keeps_moving_is_reported(cluster, monkeypatch):
    """When every round is refused, the client gives up after MAX_ROUNDS with ABORTED
    (and never fails silently)."""
    register(cluster, dense_config("refused", 4, 4), {"fc.weight": (4, 4), "fc.bias": (4,)}, 4)
    with psclient.Client(cluster.coordinator) as c:
        members = c._router.ring.members
        wrong = Ring([(m.id, members[(i + 1) % len(members)].addr, m.weight)
                      for i, m in enumerate(members)], epoch=c.epoch)
        monkeypatch.setattr(c._router, "refresh_ring", lambda: setattr(c._router, "ring", wrong))
        c._router.ring = wrong
        with pytest.raises(psclient.Error) as e:
            c.pull("refused", "fc.weight")
        assert e.value.code == grpc.StatusCode.ABORTED and "kept moving" in str(e.value)


# ================================================================ bad arguments ===

def test_bad_arguments_are_refused_before_anything_is_sent(cluster, tmp_path):
    d = integration.write_model(tmp_path / "bad", dict(integration.TINY_CONFIG, name="bad"),
                                integration.tiny_tensors(seed=7))
    cluster.ok("model", "upload", d)
    with psclient.Client(cluster.coordinator) as c:
        sent = c._router.requests_sent
        cases = [
            (c.pull, ("bad", "nope"), "has no tensor 'nope'"),
            (c.assign, ("bad", "fc1.weight", np.zeros((4, 50))), "shape (4, 50)"),
            (c.assign, ("bad", "fc1.weight", np.zeros(199)), "shape (199,)"),
            (c.add, ("bad", "fc2.bias", [1.0, np.nan, 2.0]), "NaN or infinity"),
            (c.assign, ("bad", "fc2.bias", ["a", "b", "c"]), "not an array of numbers"),
            (c.push, ("bad", "fc2.bias", np.zeros(3)), "no optimizer for tensor 'fc2.bias'"),
            (c.pull_rows, ("bad", "emb", [1]), "has no table 'emb'"),
            (c.pull, ("", "fc1.weight"), "non-empty str"),
        ]
        for fn, args, words in cases:
            with pytest.raises(ValueError) as e:
                fn(*args)
            assert words in str(e.value), (fn.__name__, args, str(e.value))
        assert c._router.requests_sent == sent, "a bad argument reached a shard"
        with pytest.raises(psclient.Error) as e:
            c.pull("no_such_model", "w")
        assert e.value.code == grpc.StatusCode.NOT_FOUND and "no_such_model" in str(e.value)
        with pytest.raises(psclient.Error) as e:
            c.pull("bad", "fc1.weight", version=9)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        for bad in (-1, float("nan")):
            with pytest.raises(ValueError) as e:
                psclient.Client(cluster.coordinator, failover_wait_s=bad)
            assert "failover_wait_s" in str(e.value)
        register(cluster, dense_config("empty", 4, 4), {"fc.weight": (4, 4), "fc.bias": (4,)}, 4)
        for fn in (c.pull, lambda m, t: c.add(m, t, np.ones(4))):  # registered, never pushed
            with pytest.raises(psclient.Error) as e:
                fn("empty", "fc.bias")
            assert e.value.code == grpc.StatusCode.NOT_FOUND and "shard-" in str(e.value)


def test_the_coordinator_is_found_as_the_c_programs_find_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PS_COORDINATOR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(psclient.Error) as e:
        psclient.Client()
    msg = str(e.value)
    assert "Client(" in msg and "PS_COORDINATOR" in msg and "run/cluster.env" in msg, msg
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "cluster.env").write_text("SHARDS=a\nCOORDINATOR=127.0.0.1:1\n")
    assert discovery.coordinator_address() == "127.0.0.1:1"
    monkeypatch.setenv("PS_COORDINATOR", "127.0.0.1:2")
    assert discovery.coordinator_address() == "127.0.0.1:2"
    assert discovery.coordinator_address("127.0.0.1:3") == "127.0.0.1:3"
    with pytest.raises(psclient.Error) as e:  # nobody listens there
        psclient.Client("127.0.0.1:1")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and "127.0.0.1:1" in str(e.value)


# ================================================================ config and cache ===

def test_training_config_is_read_like_the_c_side():
    cfg = train_config.parse({"training": {
        "optimizer": {"type": "adam", "lr": 0.01},
        "tensors": {"fc.weight": {"type": "sgd", "momentum": 0.9}},
        "non_finite": "skip", "consistency": "ssp", "staleness": 3},
        "tables": [{"name": "emb", "dim": 8, "seed": 7, "init": {"type": "normal", "scale": 0.1},
                    "optimizer": {"type": "ftrl", "l1": 0.5}}, {"name": "plain", "dim": 2}]})
    assert cfg.optimizer_for("fc.weight").params == {"lr": 0.01, "momentum": 0.9,
                                                     "weight_decay": 0.0}
    assert cfg.optimizer_for("fc.bias").params == params_of("adam", lr=0.01)
    assert cfg.non_finite == "skip"
    emb = cfg.tables["emb"]
    assert (emb.dim, emb.seed, emb.init, emb.init_scale) == (8, 7, "normal", 0.1)
    assert emb.optimizer.params == params_of("ftrl", l1=0.5)
    plain = cfg.tables["plain"]
    assert (plain.init, plain.init_scale, plain.seed, plain.optimizer) == ("zeros", 0.0, 0, None)
    assert train_config.parse({}).optimizer_for("x") is None
    for bad, words in [
        ({"training": {"optimiser": {}}}, 'unknown field "optimiser"'),
        ({"training": {"optimizer": {"type": "sgd", "beta1": 0.9}}}, 'unknown field "beta1"'),
        ({"training": {"optimizer": {"type": "rmsprop"}}}, "type must be one of"),
        ({"training": {"optimizer": {"type": "adam", "beta1": 1.0}}}, "beta1 must be in [0, 1)"),
        ({"training": {"optimizer": {"type": "sgd", "lr": 0}}}, "lr must be > 0"),
        ({"training": {"non_finite": "ignore"}}, "non_finite"),
        ({"tables": [{"name": "t", "dim": 0}]}, "dim must be an integer"),
        ({"tables": [{"name": "t", "dim": 2, "init": {"type": "gauss"}}]}, "init.type"),
        ({"tables": [{"name": "t", "dim": 2}, {"name": "t", "dim": 3}]}, "named twice"),
        ({"tables": [{"name": "t", "dim": 2, "size": 9}]}, 'unknown field "size"'),
    ]:
        with pytest.raises(ValueError) as e:
            train_config.parse(bad, "m")
        assert words in str(e.value), (bad, str(e.value))


def test_registry_entries_are_fetched_again_after_a_second():
    calls, now = [], [100.0]

    class Coordinator:
        def GetModel(self, req, timeout):
            calls.append(req.name)
            return cpb.ModelInfo(name=req.name, version=len(calls))

    r = Registry(Coordinator(), "nowhere", clock=lambda: now[0])
    assert r.get("m").version == 1 and r.get("m").version == 1 and len(calls) == 1
    now[0] += 0.9
    assert r.get("m").version == 1
    now[0] += 0.2
    assert r.get("m").version == 2
    assert r.get("m", fresh=True).version == 3


def test_refused_requests_and_only_they_go_round_again(monkeypatch):
    """route(): items refused with ABORTED are sent again on a fresh ring; items refused
    with FAILED_PRECONDITION or NOT_FOUND once more after the registry was read again,
    and the second such refusal is raised; items that went through never again."""
    def error(code):
        return psclient.Error(f"refused: {code.name}", code)

    script, seen = [], []

    def fake_round(router, op, pending, again=False):
        seen.append(sorted(pending.tolist()))
        return script.pop(0)(pending) + ([],)  # no shard unreachable

    router = routing.Router.__new__(routing.Router)
    router.refresh_ring = lambda: None
    router.replication, router.failover_wait_s = 1, None
    monkeypatch.setattr(routing.Router, "_round", fake_round)
    monkeypatch.setattr(routing, "BACKOFF_S", 0)
    script[:] = [lambda p: ([p[:3]], [(p[3:5], error(grpc.StatusCode.FAILED_PRECONDITION))], None),
                 lambda p: ([p[:1]], [], None),
                 lambda p: ([], [], None)]
    op = ScriptedOp(10)
    router.route(op)
    assert seen == [list(range(10)), [0, 1, 2, 3, 4], [0]] and op.stale_reads == 1
    seen.clear()
    script[:] = [lambda p: ([], [(p[:2], error(grpc.StatusCode.NOT_FOUND))], None),
                 lambda p: ([], [(p, error(grpc.StatusCode.NOT_FOUND))], None)]
    with pytest.raises(psclient.Error) as e:
        router.route(ScriptedOp(4))
    assert e.value.code == grpc.StatusCode.NOT_FOUND and seen == [[0, 1, 2, 3], [0, 1]]
    seen.clear()  # another failure is raised, but only once the refused items went again
    script[:] = [lambda p: ([p[:1]], [], error(grpc.StatusCode.INVALID_ARGUMENT)),
                 lambda p: ([], [], None)]
    with pytest.raises(psclient.Error) as e:
        router.route(ScriptedOp(4))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and seen == [[0, 1, 2, 3], [0]]


# ================================================================ optimizers ===

@pytest.mark.parametrize("kind,tensor,training", [
    ("sgd", "fc.weight", TRAINING),
    ("adam", "fc.bias", TRAINING),
    ("adagrad", "fc.weight", {"optimizer": {"type": "adagrad", "lr": 0.1,
                                            "initial_accumulator": 0.1, "weight_decay": 0.001}}),
    ("ftrl", "fc.bias", {"optimizer": {"type": "ftrl", "lr": 0.1, "l1": 0.05, "l2": 0.01}}),
])
def test_dense_optimizers_match_numpy(cluster, kind, tensor, training):
    require_training_side(cluster)
    name = f"opt_{kind}"
    register(cluster, dense_config(name, 40, 30, training=training),
             {"fc.weight": (30, 40), "fc.bias": (30,)}, 64)
    rng = np.random.default_rng(8)
    shape = (30, 40) if tensor == "fc.weight" else (30,)
    with psclient.Client(cluster.coordinator) as c:
        w0 = rng.standard_normal(shape).astype(np.float32)
        c.assign(name, tensor, w0)
        spec = train_config.parse({"training": training}).optimizer_for(tensor)
        assert spec.kind == kind
        ref = Reference(kind, spec.params, w0)
        for step in range(4):
            g = rng.standard_normal(shape).astype(np.float32)
            assert c.push(name, tensor, g) == 0
            assert_close(c.pull(name, tensor), ref.step(g), f"{kind} step {step + 1}")


def test_rows_optimizers_match_numpy(cluster):
    require_training_side(cluster)
    register(cluster, dense_config("rows", 4, 4, tables=TABLES),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 64)
    rng = np.random.default_rng(9)
    with psclient.Client(cluster.coordinator) as c:
        for t in TABLES:
            spec = train_config.parse({"tables": [t]}).tables[t["name"]]
            universe = np.arange(1000, 1040, dtype=np.uint64)
            ref = RowsReference(spec.optimizer, universe, c.pull_rows("rows", t["name"], universe))
            for step in range(4):  # ids repeat inside a push; some rows skip some steps
                ids = rng.choice(universe[: 20 + 5 * step], size=30)
                grads = rng.standard_normal((len(ids), t["dim"])).astype(np.float32)
                assert c.push_rows("rows", t["name"], ids, grads) == 0
                assert_close(c.pull_rows("rows", t["name"], universe), ref.push(ids, grads),
                             f"{t['name']} step {step + 1}")


def test_rows_are_the_same_for_every_pull_and_every_client(cluster):
    """Rows never pushed to are the initializer's (train_spec.h's formula), the same in
    every pull and every client; repeated ids get the same row."""
    require_training_side(cluster)
    tables = [dict(t, name=t["name"] + "_shared") for t in TABLES[:2]]
    register(cluster, dense_config("shared_rows", 4, 4, tables=tables),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 64)
    ids = np.array([5, 2**63 + 7, 5, 0, 123456789], dtype=np.uint64)
    with psclient.Client(cluster.coordinator) as a, psclient.Client(cluster.coordinator) as b:
        for t in tables:
            first = a.pull_rows("shared_rows", t["name"], ids)
            assert first.shape == (5, t["dim"]) and first.dtype == np.float32
            want = [initial_row(t["init"]["type"], t["init"]["scale"], t.get("seed", 0), int(i),
                                t["dim"]) for i in ids]
            assert_close(first, np.stack(want), f"initial rows of {t['name']}", 1e-6, 1e-7)
            assert np.array_equal(a.pull_rows("shared_rows", t["name"], ids), first)
            assert np.array_equal(b.pull_rows("shared_rows", t["name"], ids[::-1]), first[::-1])


def test_bad_row_arguments_are_refused_before_anything_is_sent(cluster):
    require_training_side(cluster)
    register(cluster, dense_config("bad_rows", 4, 4, tables=[TABLES[0], {"name": "plain",
                                                                       "dim": 2}]),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 64)
    with psclient.Client(cluster.coordinator) as c:
        cases = [(c.pull_rows, ("bad_rows", "sgd_t", [-1]), "must be >= 0"),
                 (c.pull_rows, ("bad_rows", "sgd_t", [[1, 2]]), "1-D array of integers"),
                 (c.pull_rows, ("bad_rows", "sgd_t", [1.5]), "1-D array of integers"),
                 (c.push_rows, ("bad_rows", "sgd_t", [1, 2], np.zeros((2, 3))), "shape (2, 3)"),
                 (c.push_rows, ("bad_rows", "plain", [1], np.zeros((1, 2))), "no optimizer"),
                 (c.push_rows, ("bad_rows", "nope", [1], np.zeros((1, 2))), "no table 'nope'")]
        for fn, args, words in cases:
            with pytest.raises(ValueError) as e:
                fn(*args)
            assert words in str(e.value), (fn.__name__, args, str(e.value))
        assert c._router.requests_sent == 0
        assert c.pull_rows("bad_rows", "plain", []).shape == (0, 2)


def test_non_finite_gradients_are_refused_here_or_skipped_there(cluster):
    require_training_side(cluster)
    register(cluster, dense_config("nf_reject", 4, 4, training={"optimizer": {"type": "sgd"}},
                                   tables=[dict(TABLES[0], name="t")]),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 2)
    register(cluster, dense_config("nf_skip", 4, 4, training={"optimizer": {"type": "sgd"},
                                                              "non_finite": "skip"},
                                   tables=[dict(TABLES[0], name="t")]),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 2)
    bad = np.array([1.0, np.inf, 0.5, -0.5], dtype=np.float32)
    with psclient.Client(cluster.coordinator) as c:
        for name in ("nf_reject", "nf_skip"):
            c.assign(name, "fc.bias", np.ones(4))
        sent = c._router.requests_sent
        with pytest.raises(ValueError, match="non_finite is \"reject\""):
            c.push("nf_reject", "fc.bias", bad)
        with pytest.raises(ValueError, match="NaN or infinity"):
            c.push_rows("nf_reject", "t", [1, 1], np.stack([bad, bad]))
        assert c._router.requests_sent == sent
        assert c.push("nf_skip", "fc.bias", bad) == 1  # 2 chunks of 2: the first skipped
        want = Reference("sgd", params_of("sgd"), np.ones(4)).step(np.r_[0, 0, bad[2:]])
        assert_close(c.pull("nf_skip", "fc.bias"), want, "after a skipped chunk")
        assert c.push_rows("nf_skip", "t", [3, 4], np.stack([bad, np.zeros(4)])) == 1


def test_a_changed_learning_rate_reaches_the_next_pushes(cluster):
    """psctl changes hyper-parameters in the registry (SetOptimizer); a client's next
    push once its cached entry is older than a second uses them."""
    require_training_side(cluster)
    register(cluster, dense_config("lr_change", 4, 4,
                                   training={"optimizer": {"type": "sgd", "lr": 0.1}}),
             {"fc.weight": (4, 4), "fc.bias": (4,)}, 8)
    rng = np.random.default_rng(10)
    now = [0.0]
    with psclient.Client(cluster.coordinator) as c:
        c._registry._clock = lambda: now[0]
        w0 = rng.standard_normal((4, 4)).astype(np.float32)
        c.assign("lr_change", "fc.weight", w0)
        ref = Reference("sgd", params_of("sgd", lr=0.1), w0)
        g = rng.standard_normal((4, 4)).astype(np.float32)
        c.push("lr_change", "fc.weight", g)
        ref.step(g)
        try:
            coordinator_stub(cluster).SetOptimizer(cpb.SetOptimizerRequest(
                model="lr_change", fields=["lr"], values=[0.5]), timeout=10)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip(f"the coordinator has no SetOptimizer yet: {e.details()}")
            raise
        c.push("lr_change", "fc.weight", g)  # within the second: the cached lr
        ref.step(g)
        now[0] += 1.5
        c.push("lr_change", "fc.weight", g)
        ref.h["lr"] = 0.5
        ref.step(g)
        assert_close(c.pull("lr_change", "fc.weight"), ref.w, "after the lr change")
