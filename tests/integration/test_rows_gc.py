"""Sparse rows follow a ring change and the old copies go (issue 8 item 3): rows pushed
to a table of a 3-shard ring (R = 2, so each row on two shards); `psctl ring add` of a
fourth copies the rows it will own to it; once the ring has stayed the same for the
shards' --gc-settle-ms, the shards that no longer own a row drop it, so `psctl status`
counts each row twice again, on its owners only; every row still holds what it held.
Before the collection of rows existed the old copies stayed for good. The removals are
journaled: a shard killed with SIGKILL and restarted from its --data-dir (its collection
off) comes back with the rows it kept, not the ones it dropped."""
import pathlib
import sys

import numpy as np

from conftest import SOURCE, TINY_CONFIG, shards_of, tiny_tensors, wait_for, write_model

sys.path.insert(0, str(SOURCE / "ps" / "client" / "python"))  # this checkout's package
import psclient  # noqa: E402

TABLES = {"tables": [{"name": "emb", "dim": 4, "seed": 3,
                      "init": {"type": "uniform", "scale": 0.1},
                      "optimizer": {"type": "adagrad", "lr": 0.05}}]}
N = 20000  # rows
WAIT_S = 120


LAST = {}  # the last psctl status that failed, for the message of a timeout


def table_rows(c):
    """(rows in all, {shard: rows}) of gcrows/emb per psctl status ((0, {}) when a shard
    did not answer: psctl says so and exits 1)."""
    r = c.psctl("status")
    if r.rc != 0:
        LAST["failed"] = r
        return 0, {}
    LAST["rows"] = r.doc.get("tables")
    for t in r.doc.get("tables", []):
        if t["model"] == "gcrows" and t["table"] == "emb":
            return t["rows"], t["shards"]
    return 0, {}


def test_ring_add_moves_rows_and_the_old_copies_go(make_cluster, tmp_path):
    # heartbeats of 2 s: a shard killed and restarted at once is not failed over meanwhile
    c = make_cluster(shards=3, shard_args=["--gc-settle-ms", 500], data_dirs=True,
                     heartbeat_ms=2000)
    d = write_model(pathlib.Path(tmp_path) / "gcrows", dict(TINY_CONFIG, name="gcrows", **TABLES),
                    tiny_tensors(5))
    c.ok("model", "upload", d, "--chunk-floats", "64")
    client = psclient.Client(c.coordinator)
    try:
        ids = np.arange(1, N + 1, dtype=np.uint64) * 7919
        grads = np.ones((N, 4), np.float32)
        client.push_rows("gcrows", "emb", ids, grads)  # made and stepped on both owners
        before = client.pull_rows("gcrows", "emb", ids)
        wait_for("every row on its two owners", lambda: table_rows(c)[0] == 2 * N)

        s4 = c.start_shard("shard-4")
        wait_for("shard-4 to register", lambda: shards_of(c).get("shard-4", {}).get("waiting"))
        doc = c.ok("ring", "add", "--id", "shard-4", "--addr", s4.addr, "--timeout-s", WAIT_S,
                   timeout=WAIT_S + 30)
        assert doc["state"] == "in_ring", doc
        rows, per_shard = table_rows(c)
        assert per_shard.get("shard-4", 0) > 0, per_shard  # the rows it owns were copied
        try:
            wait_for("the old copies to go (each row on its two owners again)",
                     lambda: table_rows(c)[0] == 2 * N, timeout=60)
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {LAST}") from None
        rows, per_shard = table_rows(c)
        assert set(per_shard) == {"shard-1", "shard-2", "shard-3", "shard-4"}, per_shard
        assert all(v < N for v in per_shard.values()), per_shard
        after = client.pull_rows("gcrows", "emb", ids)
        np.testing.assert_array_equal(after, before)

        kept = per_shard["shard-1"]
        c.procs["shard-1"].proc.kill()  # SIGKILL: no snapshot, the log is replayed
        c.procs["shard-1"].proc.wait(timeout=10)
        c.shard_args = ["--gc-settle-ms", -1]  # no collection: what comes back is the log's
        c.start_shard("shard-1")
        wait_for("shard-1 back with its rows", lambda: table_rows(c)[1].get("shard-1") == kept)
        assert table_rows(c)[0] == 2 * N, table_rows(c)
        log = "".join(c.procs[f"shard-{i}"].log() for i in range(1, 4))
        assert "ERROR" not in log, log[-2000:]
    finally:
        client.close()
