"""test_ring_balanced.py: `psctl ring add --balanced` on real processes: a coordinator
and four shards put on its ring with balanced tokens before any data; `psctl ring list`
must show every shard at its weight's share (peak/mean <= 1.02), a fifth shard added
without --balanced shows the hashed positions' imbalance, and a restarted coordinator
brings back the same ring (the tokens are in its state file).

The shards register with a second coordinator of their own: a shard that registers
with the coordinator under test while its ring is empty joins by itself, at hashed
positions, which is what `ring add --balanced` is here to replace. (The one under test
asks them for their keys and health over the network all the same.)

Old behaviour this catches: psctl had no --balanced (usage error), AddNode had no
balanced field, and `ring list` gave no peak/mean.
"""
import pytest

from conftest import run_psctl, wait_for

TARGET = 1.02  # the bound on primary peak/mean with the default vnodes


def shards_by_id(doc):
    return {s["id"]: s for s in doc["shards"]}


@pytest.fixture
def two_coordinators(make_cluster):
    """(the coordinator under test, the shards' home coordinator), both without shards."""
    return make_cluster(shards=0), make_cluster(shards=0)


def test_balanced_adds_keep_the_ring_balanced(two_coordinators):
    c, home = two_coordinators
    addrs = {}
    for i in range(1, 6):
        sid = f"shard-{i}"
        addrs[sid] = home.start_shard(sid).addr
    home.wait_alive(list(addrs))

    for sid in ("shard-1", "shard-2", "shard-3", "shard-4"):
        text = c.ok("ring", "add", "--id", sid, "--addr", addrs[sid], "--balanced",
                    json_mode=False).out
        assert f"shard {sid} ({addrs[sid]}, weight 1) is on the ring at balanced tokens" in text
    balanced = c.ok("ring", "list")
    shards = shards_by_id(balanced)
    assert set(shards) == {"shard-1", "shard-2", "shard-3", "shard-4"}
    assert all(s["in_ring"] and s["balanced"] for s in shards.values()), shards
    assert abs(sum(s["share"] for s in shards.values()) - 1.0) < 1e-9
    text = c.ok("ring", "list", json_mode=False).out
    print(f"\n4 shards added --balanced: peak/mean {balanced['peak_mean']:.4f} "
          f"(replication {balanced['replication']}: "
          f"{balanced.get('peak_mean_replicated', balanced['peak_mean']):.4f})\n{text}")
    assert balanced["peak_mean"] <= TARGET, balanced
    assert "ownership peak/mean" in text and " balanced" in text

    # a fifth shard at hashed positions: the ring is no longer at its weights' shares
    c.ok("ring", "add", "--id", "shard-5", "--addr", addrs["shard-5"])
    mixed = c.ok("ring", "list")
    text = c.ok("ring", "list", json_mode=False).out
    print(f"5th shard added without --balanced: peak/mean {mixed['peak_mean']:.4f} "
          f"(was {balanced['peak_mean']:.4f})\n{text}")
    assert not shards_by_id(mixed)["shard-5"]["balanced"]
    assert "hashed" in text
    assert mixed["peak_mean"] > balanced["peak_mean"] + 0.005, (balanced, mixed)

    # the coordinator restarts: the same ring from its state file
    c.procs["coordinator"].stop()
    c.start_coordinator()
    again = c.ok("ring", "list")
    assert again["epoch"] == mixed["epoch"]
    assert again["peak_mean"] == mixed["peak_mean"]
    for sid, s in shards_by_id(again).items():
        assert s["share"] == shards_by_id(mixed)[sid]["share"], sid
        assert s["balanced"] == (sid != "shard-5"), sid


def test_registered_shards_move_to_balanced_tokens(make_cluster):
    """The scripts/cluster way: shards started with --coordinator join the empty ring by
    themselves, at hashed positions; while it holds no data, each can be taken off and
    put back with --balanced (the way `psctl ring add --help` gives)."""
    c = make_cluster(shards=4)

    def all_joined():  # alive is not yet on the ring: a join may still be under way
        doc = c.ok("ring", "list")
        shards = doc["shards"]
        return doc if len(shards) == 4 and all(s["in_ring"] for s in shards) and not doc.get(
            "change") else None

    hashed = wait_for("the 4 shards to join", all_joined)
    ids = sorted(shards_by_id(hashed))
    assert not any(s["balanced"] for s in hashed["shards"])
    for sid in ids:
        c.ok("ring", "remove", "--id", sid)
    assert c.ok("ring", "list")["peak_mean"] == 0  # nobody on the ring
    for sid in ids:
        c.ok("ring", "add", "--id", sid, "--addr", c.procs[sid].addr, "--balanced")
    balanced = c.ok("ring", "list")
    print(f"\n4 registered shards: peak/mean {hashed['peak_mean']:.4f} at hashed positions, "
          f"{balanced['peak_mean']:.4f} after ring remove + ring add --balanced")
    shards = shards_by_id(balanced)
    assert all(s["in_ring"] and s["balanced"] and s["alive"] for s in shards.values()), shards
    assert balanced["peak_mean"] <= TARGET < hashed["peak_mean"], (hashed, balanced)
    c.wait_alive(ids)  # heartbeats go on; nobody is put back at hashed positions
    assert c.ok("ring", "list")["peak_mean"] == balanced["peak_mean"]


def test_balanced_is_in_the_help():
    for args in (["ring", "--help"], ["ring", "add", "--help"]):
        r = run_psctl(*args, json_mode=False, coordinator="127.0.0.1:1")
        assert r.rc == 0 and "--balanced" in r.out, r
