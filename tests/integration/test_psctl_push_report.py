"""A push that fails on one shard and succeeds on the others: psctl must say exactly
which chunks were applied and which were not, and --chunks must retry exactly the
unapplied ones, so an ADD is applied once everywhere (never twice where it had
succeeded). The failure is made deterministic with the shard's own rule that a push
whose result would not be finite is refused whole: the chunks of one shard hold values
near the float32 maximum, so an ADD overflows there and nowhere else."""
import numpy as np

from conftest import TINY_CONFIG, tiny_tensors, write_model


def tiny_model(root, name, seed):
    return write_model(root / name, dict(TINY_CONFIG, name=name), tiny_tensors(seed))


def pulled(cluster, model, tensor):
    doc = cluster.ok("pull", model, tensor)
    return np.array(doc["values"], dtype=np.float32).reshape(-1)


def flt(values):
    return ",".join(repr(float(np.float32(v))) for v in values)


def as_list(chunks):
    return ",".join(str(c) for c in sorted(chunks))


def test_partly_failed_push_reports_and_retries_only_the_rest(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinypart", seed=11)
    cluster.ok("model", "upload", d, "--chunk-floats", "8")  # fc1.weight: 200 floats, 25 chunks
    loc = cluster.ok("locate", "tinypart", "fc1.weight")
    by_shard = {}
    for c in loc["chunks"]:
        by_shard.setdefault(c["shard"], []).append(c["index"])
    assert len(by_shard) >= 2, by_shard
    victim = max(by_shard, key=lambda s: len(by_shard[s]))
    poisoned = sorted(by_shard[victim])
    others = sorted(c["index"] for c in loc["chunks"] if c["index"] not in poisoned)

    # the victim's chunks hold 3e38: adding 1e38 there overflows float32
    base = pulled(cluster, "tinypart", "fc1.weight")
    big = np.full(base.size, 3e38, np.float32)
    doc = cluster.ok("push", "tinypart", "fc1.weight", "--assign", "--values", flt(big),
                     "--chunks", as_list(poisoned))
    assert doc["applied"] == _ranges(poisoned)
    before = pulled(cluster, "tinypart", "fc1.weight")
    mask = np.zeros(base.size, bool)
    for c in poisoned:
        mask[c * 8:(c + 1) * 8] = True
    assert np.array_equal(before[mask], big[mask]) and np.array_equal(before[~mask], base[~mask])

    r = cluster.psctl("push", "tinypart", "fc1.weight", "--add", "--fill", "1e38")
    assert r.rc == 1, r
    assert "partly failed" in r.err, r
    assert r.doc["applied"] == _ranges(others), r.doc
    assert r.doc["not_applied"] == _ranges(poisoned), r.doc
    assert r.doc["unknown"] == ""
    assert f"--chunks {_ranges(poisoned)}" in r.err, r.err
    after = pulled(cluster, "tinypart", "fc1.weight")
    delta = np.float32(1e38)
    assert np.array_equal(after[~mask], before[~mask] + delta)  # applied once where it could
    assert np.array_equal(after[mask], before[mask])  # nothing on the refusing shard

    # the operator repairs the victim's values, then retries exactly what was not applied
    cluster.ok("push", "tinypart", "fc1.weight", "--assign", "--values", flt(base),
               "--chunks", as_list(poisoned))
    doc = cluster.ok("push", "tinypart", "fc1.weight", "--add", "--fill", "1e38",
                     "--chunks", r.doc["not_applied"])
    assert doc["applied"] == _ranges(poisoned) and doc["not_applied"] == ""
    final = pulled(cluster, "tinypart", "fc1.weight")
    assert np.array_equal(final, base + delta)  # every chunk got the ADD exactly once


def test_chunks_option_is_checked_before_anything_is_sent(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinychunks", seed=12)
    cluster.ok("model", "upload", d, "--chunk-floats", "8")
    before = pulled(cluster, "tinychunks", "fc1.weight")
    for bad, words in [("25", "past the last chunk (24)"), ("3-1", "backwards"),
                       ("1,,2", "expected an index"), ("x", "expected an index")]:
        r = cluster.psctl("push", "tinychunks", "fc1.weight", "--add", "--fill", "1",
                          "--chunks", bad)
        assert r.rc == 2 and words in r.err, r
    assert np.array_equal(pulled(cluster, "tinychunks", "fc1.weight"), before)


def _ranges(chunks):
    """The chunk list psctl prints: consecutive runs as a-b."""
    out, run = [], []
    for c in sorted(chunks):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [c]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)
