"""Ring changes that move data (issue 8 item 3), against real processes on loopback
ports: `psctl ring add` of a shard started after a model was uploaded copies the keys
it will own to it while a thread ADDs to the model through psclient and another reads
it; the add completes; every chunk is then on each of its owners (pulled from each:
equal), the final value equals the acknowledged ADDs, and no read or push failed. Then
`psctl ring drain` of one shard: the same checks, and the drained shard is off the ring.
Also: one change at a time, and `ring cancel` leaves the ring as it was.

The coordinator half (coord_change.c) is unit-tested in ps/coordinator; this needs the
shards' half too (they report synced_epoch in their heartbeats)."""
import pathlib
import sys
import threading

import numpy as np

from conftest import SOURCE, chunk_owners, pull_at, shards_of, wait_for, write_model

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402

FLOATS = 96 * 1024 + 7  # in chunks of 2048 floats: 49 chunks, spread over every shard
CHUNK_FLOATS = 2048
CONFIG = {
    "name": "moving",
    "max_batch_size": 1,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, FLOATS]}],
    "layers": [{"op": "dense", "input": "x", "output": "y", "weight": "big", "bias": "b"}],
}
WAIT_S = 120  # for a change to commit (seconds; it takes well under one on loopback)


def upload(c, tmp):
    root = write_model(pathlib.Path(tmp) / "moving", CONFIG,
                       {"big": np.zeros((FLOATS, 1), "<f4"), "b": np.zeros(FLOATS, "<f4")})
    c.ok("model", "upload", str(root), "--chunk-floats", CHUNK_FLOATS)


class Load:
    """One thread ADDs 1.0 to every float of moving/big (counting the acknowledged
    ADDs), another pulls it whole (counting reads, keeping failures)."""

    def __init__(self, coordinator):
        self.writer = psclient.Client(coordinator)
        self.reader = psclient.Client(coordinator)
        self.halt = threading.Event()
        self.acked, self.reads = 0, 0
        self.push_failures, self.read_failures = [], []
        self.threads = [threading.Thread(target=self._add, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]

    def _add(self):
        delta = np.ones(FLOATS, np.float32)
        while not self.halt.is_set():
            try:
                self.writer.add("moving", "big", delta, version=1)
                self.acked += 1
            except psclient.Error as e:
                self.push_failures.append(str(e))

    def _read(self):
        while not self.halt.is_set():
            try:
                v = self.reader.pull("moving", "big", version=1)
                assert v.size == FLOATS
                self.reads += 1
            except (psclient.Error, AssertionError) as e:
                self.read_failures.append(str(e))

    def start(self):
        for t in self.threads:
            t.start()
        wait_for("the first ADDs and reads", lambda: self.acked >= 3 and self.reads >= 3)

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(timeout=60)
        self.writer.close()
        self.reader.close()


def check_every_owner(c, acked):
    """Every chunk is on each of its owners (R = 2), and equals the acknowledged ADDs."""
    epoch = c.ok("status")["epoch"]
    chunks = chunk_owners(c, "moving", "big")
    for key, addrs in chunks:
        assert len(addrs) == 2, (key, addrs)
        vals = [pull_at(a, key, epoch) for a in addrs]
        assert np.array_equal(vals[0], vals[1]), f"owners {addrs} differ for key {key:x}"
        assert np.all(vals[0] == float(acked)), (
            f"key {key:x}: {np.unique(vals[0])[:4]} != {acked} acknowledged ADDs")
    return chunks


def test_ring_add_then_drain_under_pushes_and_reads(make_cluster, tmp_path):
    c = make_cluster(shards=3)  # R = 2, the coordinator's default
    upload(c, tmp_path)
    s4 = c.start_shard("shard-4")  # after the upload: it waits off the ring
    wait_for("shard-4 to register", lambda: shards_of(c).get("shard-4", {}).get("waiting"))

    load = Load(c.coordinator)
    load.start()
    try:
        doc = c.ok("ring", "add", "--id", "shard-4", "--addr", s4.addr, "--timeout-s", WAIT_S,
                   timeout=WAIT_S + 30)
        assert doc["state"] == "in_ring", doc
        at_add = load.acked
        wait_for("ADDs after the join", lambda: load.acked >= at_add + 3)
    finally:
        load.stop()
    assert not load.push_failures, load.push_failures[:3]
    assert not load.read_failures, load.read_failures[:3]
    ring = c.ok("ring", "list")
    assert ring["change"] is None and ring["epoch"] == doc["epoch"], ring
    assert shards_of(c)["shard-4"]["in_ring"]
    chunks = check_every_owner(c, load.acked)
    assert any(s4.addr in addrs for _, addrs in chunks), "shard-4 owns nothing after its join"
    log = c.procs["coordinator"].log()
    assert "ring add shard-4 at" in log and "joining" in log and "ring add shard-4 committed" in log

    total = load.acked
    victim = "shard-2"
    victim_addr = c.procs[victim].addr
    load = Load(c.coordinator)
    load.start()
    try:
        doc = c.ok("ring", "drain", "--id", victim, "--timeout-s", WAIT_S, timeout=WAIT_S + 30)
        assert doc["state"] == "drained", doc
        at_drain = load.acked
        wait_for("ADDs after the drain", lambda: load.acked >= at_drain + 3)
    finally:
        load.stop()
    assert not load.push_failures, load.push_failures[:3]
    assert not load.read_failures, load.read_failures[:3]
    drained = shards_of(c)[victim]
    assert not drained["in_ring"] and not drained["draining"], drained
    chunks = check_every_owner(c, total + load.acked)
    assert all(victim_addr not in addrs for _, addrs in chunks), "the drained shard owns keys"
    assert f"ring drain {victim} committed" in c.procs["coordinator"].log()


def test_one_change_at_a_time_and_cancel(make_cluster, tmp_path):
    c = make_cluster(shards=3)
    upload(c, tmp_path)
    before = c.ok("ring", "list")
    # nothing listens there: the shards cannot copy to it, so the join stays pending
    doc = c.ok("ring", "add", "--id", "shard-9", "--addr", "127.0.0.1:1", "--no-check",
               "--no-wait")
    assert doc["state"] == "joining", doc
    ring = c.ok("ring", "list")
    change = ring["change"]
    assert change["kind"] == "join" and change["node"] == "shard-9", change
    assert ring["epoch"] == before["epoch"] + 1 and change["pending_epoch"] == ring["epoch"] + 1
    assert change["shards"] == 3 and change["synced"] < 3, change
    text = c.ok("status", json_mode=False).out
    assert "RING CHANGE: the join of shard-9" in text and "JOINING" in text, text
    assert "CHUNKS LEFT" in text and "BYTES LEFT" in text, text
    per = c.ok("status")["change"]["per_shard"]  # progress, asked of each shard
    assert len(per) == 3 and all(isinstance(s["chunks_left"], int) and
                                 isinstance(s["bytes_left"], int) for s in per), per

    r = c.psctl("ring", "drain", "--id", "shard-1")
    assert r.rc == 1 and r.doc["error"]["code"] == "FAILED_PRECONDITION", r
    assert "a ring change is in progress, the join of shard shard-9" in r.err, r

    doc = c.ok("ring", "cancel")
    assert doc["cancelled"] == "join" and doc["id"] == "shard-9", doc
    ring = c.ok("ring", "list")
    assert ring["change"] is None and ring["epoch"] == before["epoch"] + 2, ring
    assert "shard-9" not in shards_of(c)  # added by hand, never heard from: forgotten
    r = c.psctl("ring", "cancel")
    assert r.rc == 1 and "no ring change is in progress" in r.err, r
    assert "ring change cancelled: the join of shard shard-9" in c.procs["coordinator"].log()
