"""psctl against a real cluster (a coordinator and 3 shards on loopback ports): ring
membership, model upload and the registry, where chunks live (checked on the shards
themselves over gRPC), pushes and pulls compared float for float with numpy, the
refusals an operator must get for bad input, liveness after a shard is killed, and a
coordinator restart that keeps its state. psctl runs with --json the way scripts use it;
a few tests read the tables people see."""
import json
import os
import pathlib
import signal
import time

import grpc
import numpy as np
import pytest

import ps_pb2
import ps_pb2_grpc

from conftest import (HEARTBEAT_MS, PSCTL, TINY_CONFIG, copy_model, read_safetensors, run_psctl,
                      tiny_tensors, write_model, write_safetensors)


def tiny_model(root, name, seed=1, hidden=50, **kw):
    config = dict(TINY_CONFIG, name=name)
    return write_model(root / name, config, tiny_tensors(seed, hidden), **kw)


def flt(values):
    """Command-line text of float32 values that reads back exactly."""
    return ",".join(repr(float(np.float32(v))) for v in values)


def pulled(cluster, model, tensor):
    doc = cluster.ok("pull", model, tensor)
    return np.array(doc["values"], dtype=np.float32).reshape(doc["shape"])


def shard_pull(addr, epoch, key):
    """Pulls one key straight from a shard (no psctl, no client library)."""
    with grpc.insecure_channel(addr) as ch:
        stub = ps_pb2_grpc.ParameterServerStub(ch)
        r = stub.Pull(ps_pb2.PullRequest(epoch=epoch, keys=[key]), timeout=10)
        return np.frombuffer(r.values, dtype="<f4"), r.versions[0]


# ================================================================ help and usage ===

HELP_COMMANDS = [
    [], ["ring"], ["ring", "list"], ["ring", "add"], ["ring", "remove"], ["model"],
    ["model", "upload"], ["model", "list"], ["model", "show"], ["model", "versions"], ["model", "delete"],
    ["status"], ["locate"],
    ["push"], ["pull"],
]


@pytest.mark.parametrize("cmd", HELP_COMMANDS, ids=lambda c: " ".join(c) or "psctl")
def test_help_exits_0(cmd):
    r = run_psctl(*cmd, "--help", json_mode=False)
    assert r.rc == 0, r
    assert r.out.startswith("usage: psctl"), r
    assert "--coordinator" in r.out and "exit status" in r.out


def test_usage_errors_exit_2():
    for args in [[], ["frobnicate"], ["ring"], ["ring", "frob"], ["ring", "list", "extra"],
                 ["ring", "add", "--id", "x"], ["model", "upload"], ["push", "m"],
                 ["status", "--bogus"], ["status", "--timeout-ms", "0"]]:
        r = run_psctl(*args, json_mode=False, coordinator="127.0.0.1:1")
        assert r.rc == 2, r
        assert r.err.strip(), r


def test_no_coordinator_says_how_to_give_one(tmp_path):
    r = run_psctl("ring", "list", json_mode=False, cwd=tmp_path)
    assert r.rc == 2, r
    for hint in ("--coordinator", "PS_COORDINATOR", "run/cluster.env"):
        assert hint in r.err, r


def test_unreachable_coordinator_fails_with_the_code():
    r = run_psctl("ring", "list", coordinator="127.0.0.1:1")
    assert r.rc == 1, r
    assert "UNAVAILABLE" in r.err and "127.0.0.1:1" in r.err, r
    assert r.doc["error"]["code"] == "UNAVAILABLE", r


def test_coordinator_from_env_and_env_files(cluster, tmp_path):
    r = run_psctl("ring", "list", env_extra={"PS_COORDINATOR": cluster.coordinator}, cwd=tmp_path)
    assert r.rc == 0 and len(r.doc["shards"]) == 3, r
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "cluster.env").write_text(f"COORDINATOR={cluster.coordinator}\n")
    r = run_psctl("ring", "list", cwd=tmp_path)
    assert r.rc == 0 and len(r.doc["shards"]) == 3, r
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "cluster.env").write_text(f"SHARDS=x\nCOORDINATOR={cluster.coordinator}\n")
    r = run_psctl("ring", "list", env_extra={"PS_RUN_DIR": str(other)}, cwd="/")
    assert r.rc == 0 and len(r.doc["shards"]) == 3, r


# ================================================================ ring and status ===

def test_ring_list_shows_three_alive_shards(cluster):
    doc = cluster.ok("ring", "list")
    assert doc["epoch"] >= 3
    shards = {s["id"]: s for s in doc["shards"]}
    assert set(shards) == {"shard-1", "shard-2", "shard-3"}
    for sid, s in shards.items():
        assert s["alive"] and s["in_ring"] and s["weight"] == 1
        assert s["addr"] == cluster.procs[sid].addr
        assert 0.2 < s["share"] < 0.5
    assert abs(sum(s["share"] for s in shards.values()) - 1.0) < 1e-6
    text = cluster.ok("ring", "list", json_mode=False).out
    assert f"ring epoch {doc['epoch']}" in text and "3 shards, 3 alive" in text
    for sid in shards:
        assert sid in text and cluster.procs[sid].addr in text


def test_status_shows_nodes_and_heartbeats(cluster):
    doc = cluster.ok("status")
    assert doc["coordinator"] == cluster.coordinator
    assert doc["epoch"] == cluster.ok("ring", "list")["epoch"]
    for sid in ("shard-1", "shard-2", "shard-3"):
        n = next(n for n in doc["nodes"] if n["id"] == sid)
        assert n["role"] == "shard" and n["alive"] and n["addr"] == cluster.procs[sid].addr
        assert n["last_heartbeat_ms"] is not None and n["last_heartbeat_ms"] < 5 * HEARTBEAT_MS
        assert {"keys", "seq", "weight", "in_ring"} <= set(n)
    text = cluster.ok("status", json_mode=False).out
    assert "ring epoch" in text and "LAST HEARTBEAT" in text and "shard-2" in text


def test_ring_remove_of_unknown_id(cluster):
    epoch = cluster.ok("ring", "list")["epoch"]
    r = cluster.psctl("ring", "remove", "--id", "no-such-shard")
    assert r.rc == 1, r
    assert "NOT_FOUND" in r.err and "no-such-shard" in r.err, r
    assert cluster.ok("ring", "list")["epoch"] == epoch


def test_ring_add_refusals(cluster):
    epoch = cluster.ok("ring", "list")["epoch"]
    r = cluster.psctl("ring", "add", "--id", "shard-9", "--addr", "not-an-address")
    assert r.rc == 2 and "HOST:PORT" in r.err, r
    r = cluster.psctl("ring", "add", "--id", "shard-9", "--addr", "127.0.0.1:99999")
    assert r.rc == 2 and "HOST:PORT" in r.err, r
    r = cluster.psctl("ring", "add", "--id", "shard-9", "--addr", "127.0.0.1:1")
    assert r.rc == 1 and "no shard answers at 127.0.0.1:1" in r.err and "UNAVAILABLE" in r.err, r
    r = cluster.psctl("ring", "add", "--id", "shard-9", "--addr", cluster.procs["shard-1"].addr)
    assert r.rc == 1 and "says its id is 'shard-1'" in r.err, r
    r = cluster.psctl("ring", "add", "--id", "shard-1", "--addr", cluster.procs["shard-1"].addr)
    assert r.rc == 1 and "ALREADY_EXISTS" in r.err, r
    r = cluster.psctl("ring", "add", "--id", "shard-9", "--addr", "127.0.0.1:5", "--weight", "0")
    assert r.rc == 2 and "--weight" in r.err, r
    assert cluster.ok("ring", "list")["epoch"] == epoch


# ================================================================ upload, list, locate ===

def test_upload_tiny_model_then_list_and_show(cluster, tmp_path):
    d = tiny_model(tmp_path, "tiny")
    doc = cluster.ok("model", "upload", d, "--chunk-floats", "64")
    assert doc["model"] == "tiny" and doc["version"] == 1
    assert {t["name"]: t["chunks"] for t in doc["tensors"]} == {
        "fc1.weight": 4, "fc1.bias": 1, "fc2.weight": 3, "fc2.bias": 1}
    assert doc["floats"] == 403 and doc["bytes"] == 403 * 4 and doc["chunks"] == 9
    assert set(doc["shards"]) <= {"shard-1", "shard-2", "shard-3"} and doc["shards"]
    assert doc["warnings"] == []

    models = cluster.ok("model", "list")["models"]
    m = next(m for m in models if m["name"] == "tiny")
    assert m["version"] == 1 and m["latest"] and m["parameters"] == 403
    assert {t["name"]: t["shape"] for t in m["tensors"]} == {
        "fc1.weight": [50, 4], "fc1.bias": [50], "fc2.weight": [3, 50], "fc2.bias": [3]}
    assert all(t["dtype"] == "FP32" and t["chunk_floats"] == 64 for t in m["tensors"])

    show = cluster.ok("model", "show", "tiny")
    assert show["config"]["name"] == "tiny" and show["parameters"] == 403
    text = cluster.ok("model", "list", json_mode=False).out
    assert "tiny" in text and "403" in text


def test_locate_puts_every_chunk_on_a_shard_that_holds_it(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinyloc", seed=2)
    cluster.ok("model", "upload", d, "--chunk-floats", "16")
    weights = read_safetensors(d / "1" / "model.safetensors")
    addrs = {sid: cluster.procs[sid].addr for sid in ("shard-1", "shard-2", "shard-3")}
    seen = set()
    for name, want in weights.items():
        doc = cluster.ok("locate", "tinyloc", name)
        flat = want.reshape(-1)
        assert doc["chunk_floats"] == 16 and len(doc["chunks"]) == -(-flat.size // 16)
        for c in doc["chunks"]:
            assert addrs[c["shard"]] == c["addr"]
            lo = c["index"] * 16
            values, version = shard_pull(c["addr"], doc["epoch"], int(c["key"], 16))
            assert np.array_equal(values, flat[lo:lo + 16]), (name, c)
            assert version >= 1 and c["floats"] == values.size
            owner_ids = [o["id"] for o in c["owners"]]  # R = 2: the primary first
            assert owner_ids[0] == c["shard"] and len(owner_ids) == 2, c
            for o in c["owners"][1:]:  # a backup holds the same values
                assert np.array_equal(shard_pull(o["addr"], doc["epoch"], int(c["key"], 16))[0],
                                      values), (name, c, o)
            for other in set(addrs) - set(owner_ids):  # nobody else answers for it
                with pytest.raises(grpc.RpcError) as e:
                    shard_pull(addrs[other], doc["epoch"], int(c["key"], 16))
                assert e.value.code() == grpc.StatusCode.ABORTED
            seen.add(c["shard"])
        # the same values through psctl's whole-tensor pull
        assert np.array_equal(pulled(cluster, "tinyloc", name), want)
        check = cluster.ok("locate", "tinyloc", name, "--check")
        assert all(c["held"] and c["chunk_version"] >= 1 for c in check["chunks"])
    assert len(seen) == 3, "28 chunks should land on every shard"
    text = cluster.ok("locate", "tinyloc", "fc1.weight", json_mode=False).out
    assert "CHUNK" in text and "KEY" in text and "shard-" in text


def test_upload_sample_model(cluster, sample_model):
    doc = cluster.ok("model", "upload", sample_model)
    weights = read_safetensors(sample_model / str(doc["version"]) / "model.safetensors")
    config = json.loads((sample_model / "config.json").read_text())
    assert doc["model"] == config["name"]
    assert {t["name"] for t in doc["tensors"]} <= set(weights)
    m = next(m for m in cluster.ok("model", "list")["models"]
             if m["name"] == config["name"] and m["version"] == doc["version"])
    assert m["parameters"] == sum(int(np.prod(weights[t["name"]].shape)) for t in doc["tensors"])
    for t in doc["tensors"]:
        assert np.array_equal(pulled(cluster, doc["model"], t["name"]), weights[t["name"]]), t["name"]
        loc = cluster.ok("locate", doc["model"], t["name"], "--check")
        assert len(loc["chunks"]) == t["chunks"] and all(c["held"] for c in loc["chunks"])
        for c in loc["chunks"]:
            values, _ = shard_pull(c["addr"], loc["epoch"], int(c["key"], 16))
            lo = c["index"] * loc["chunk_floats"]
            assert np.array_equal(values, weights[t["name"]].reshape(-1)[lo:lo + c["floats"]])


def test_upload_picks_the_highest_version_or_the_one_asked(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinyver", seed=3)
    write_safetensors(d / "3" / "model.safetensors", tiny_tensors(4))
    (d / "notaversion").mkdir()
    assert cluster.ok("model", "upload", d)["version"] == 3
    assert np.array_equal(pulled(cluster, "tinyver", "fc2.bias"), tiny_tensors(4)["fc2.bias"])
    assert cluster.ok("model", "upload", d, "--version", "1")["version"] == 1
    r = cluster.psctl("model", "upload", d, "--version", "2")
    assert r.rc == 1 and "no version 2" in r.err, r
    versions = sorted(m["version"] for m in cluster.ok("model", "list")["models"]
                      if m["name"] == "tinyver")
    assert versions == [1, 3]


# ================================================================ push and pull ===

def test_push_changes_pull_exactly(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinypush", seed=5)
    cluster.ok("model", "upload", d, "--chunk-floats", "32")
    before = pulled(cluster, "tinypush", "fc1.weight")
    delta = np.random.default_rng(9).standard_normal(before.size).astype(np.float32)
    doc = cluster.ok("push", "tinypush", "fc1.weight", "--add", "--values", flt(delta))
    assert doc["op"] == "add" and doc["floats"] == 200 and doc["chunks"] == 7
    after = pulled(cluster, "tinypush", "fc1.weight")
    assert np.array_equal(after.reshape(-1), before.reshape(-1) + delta)  # float32 adds

    cluster.ok("push", "tinypush", "fc1.bias", "--assign", "--fill", "0.25")
    assert np.array_equal(pulled(cluster, "tinypush", "fc1.bias"), np.full(50, 0.25, np.float32))
    cluster.ok("push", "tinypush", "fc1.bias", "--add", "--fill", "-1.5")
    assert np.array_equal(pulled(cluster, "tinypush", "fc1.bias"), np.full(50, -1.25, np.float32))

    raw = np.arange(150, dtype="<f4") / 7
    (tmp_path / "w.bin").write_bytes(raw.tobytes())
    cluster.ok("push", "tinypush", "fc2.weight", "--assign", "--file", tmp_path / "w.bin")
    assert np.array_equal(pulled(cluster, "tinypush", "fc2.weight").reshape(-1), raw)
    cluster.ok("pull", "tinypush", "fc2.weight", "--file", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == raw.tobytes()

    text = cluster.ok("push", "tinypush", "fc2.bias", "--add", "--values", "1,2,3",
                      json_mode=False).out
    assert "pushed add of 3 floats to tinypush/fc2.bias" in text
    text = cluster.ok("pull", "tinypush", "fc2.bias", json_mode=False).out
    want = tiny_tensors(5)["fc2.bias"] + np.array([1, 2, 3], np.float32)
    assert [np.float32(v) for v in text.split(":")[-1].split()] == list(want)


def test_bad_pushes_are_refused_and_change_nothing(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinybad", seed=6)
    cluster.ok("model", "upload", d)
    before = pulled(cluster, "tinybad", "fc2.bias")
    (tmp_path / "short.bin").write_bytes(np.zeros(2, "<f4").tobytes())
    (tmp_path / "nan.bin").write_bytes(np.array([1, np.nan, 2], "<f4").tobytes())
    failures = [  # (args, rc, words the message must hold)
        (["push", "no-such-model", "fc2.bias", "--add", "--fill", "1"], 1,
         ["NOT_FOUND", "no-such-model"]),
        (["push", "tinybad", "fc9.bias", "--add", "--fill", "1"], 1, ["no tensor 'fc9.bias'", "fc2.bias"]),
        (["pull", "tinybad", "fc9.bias"], 1, ["no tensor 'fc9.bias'"]),
        (["locate", "no-such-model", "x"], 1, ["NOT_FOUND"]),
        (["push", "tinybad", "fc2.bias", "--add", "--values", "1,2"], 1, ["2 numbers", "3 elements"]),
        (["push", "tinybad", "fc2.bias", "--add", "--values", "1,2,3,4"], 1, ["4 numbers"]),
        (["push", "tinybad", "fc2.bias", "--add", "--values", "1,nan,2"], 1, ["NaN", "finite"]),
        (["push", "tinybad", "fc2.bias", "--assign", "--values", "1,inf,2"], 1, ["infinite"]),
        (["push", "tinybad", "fc2.bias", "--add", "--fill", "-inf"], 1, ["infinite"]),
        (["push", "tinybad", "fc2.bias", "--add", "--file", tmp_path / "short.bin"], 1, ["8 bytes", "12 bytes"]),
        (["push", "tinybad", "fc2.bias", "--add", "--file", tmp_path / "nan.bin"], 1, ["NaN"]),
        (["push", "tinybad", "fc2.bias", "--add", "--file", tmp_path / "missing.bin"], 1, ["missing.bin"]),
        (["push", "tinybad", "fc2.bias", "--add", "--values", "1,x,2"], 2, ["not a number"]),
        (["push", "tinybad", "fc2.bias", "--values", "1,2,3"], 2, ["--add or --assign"]),
        (["push", "tinybad", "fc2.bias", "--add", "--assign", "--fill", "1"], 2, ["exclude"]),
        (["push", "tinybad", "fc2.bias", "--add", "--fill", "1", "--values", "1,2,3"], 2, ["exactly one"]),
        (["push", "tinybad", "fc2.bias", "--add"], 2, ["exactly one"]),
    ]
    for args, rc, words in failures:
        r = cluster.psctl(*args)
        assert r.rc == rc, r
        for w in words:
            assert w in r.err, (w, r)
        if rc == 1:
            assert r.doc["error"]["message"] in r.err, r
    assert np.array_equal(pulled(cluster, "tinybad", "fc2.bias"), before)


def test_ring_remove_of_a_shard_holding_data_is_refused(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinyrm", seed=7)
    cluster.ok("model", "upload", d, "--chunk-floats", "8")
    epoch = cluster.ok("ring", "list")["epoch"]
    for sid in ("shard-1", "shard-2", "shard-3"):
        r = cluster.psctl("ring", "remove", "--id", sid)
        assert r.rc == 1, r
        assert "FAILED_PRECONDITION" in r.err and f"shard {sid} holds" in r.err, r
        assert r.doc["error"]["code"] == "FAILED_PRECONDITION"
    doc = cluster.ok("ring", "list")
    assert doc["epoch"] == epoch and len(doc["shards"]) == 3


# ================================================================ bad model directories ===

def test_upload_refuses_broken_directories(cluster, tmp_path):
    listed = lambda: {(m["name"], m["version"]) for m in cluster.ok("model", "list")["models"]}
    before = listed()

    broken = tiny_model(tmp_path, "brokencfg")
    (broken / "config.json").write_text('{"name": "brokencfg", "inputs": [')
    r = cluster.psctl("model", "upload", broken)
    assert r.rc == 1 and "config.json" in r.err and "JSON" in r.err, r

    badcfg = tiny_model(tmp_path, "badcfg")
    cfg = json.loads((badcfg / "config.json").read_text())
    cfg["layers"][0]["op"] = "convolve"
    (badcfg / "config.json").write_text(json.dumps(cfg))
    r = cluster.psctl("model", "upload", badcfg)
    assert r.rc == 1 and "convolve" in r.err, r

    shape = tiny_model(tmp_path, "badshape")
    t = tiny_tensors()
    t["fc1.weight"] = np.zeros((50, 5), np.float32)
    write_safetensors(shape / "1" / "model.safetensors", t)
    r = cluster.psctl("model", "upload", shape)
    assert r.rc == 1 and "fc1.weight" in r.err and "[50, 5]" in r.err and "[50, 4]" in r.err, r

    missing = tiny_model(tmp_path, "missingtensor")
    t = tiny_tensors()
    del t["fc2.bias"]
    write_safetensors(missing / "1" / "model.safetensors", t)
    r = cluster.psctl("model", "upload", missing)
    assert r.rc == 1 and "'fc2.bias'" in r.err and "not in" in r.err, r

    half = tiny_model(tmp_path, "halfprecision", dtypes={"fc1.bias": "F16"})
    r = cluster.psctl("model", "upload", half)
    assert r.rc == 1 and "fc1.bias" in r.err and "F16" in r.err, r

    nonfinite = tiny_model(tmp_path, "nonfinite")
    t = tiny_tensors()
    t["fc2.weight"][1, 2] = np.inf
    write_safetensors(nonfinite / "1" / "model.safetensors", t)
    r = cluster.psctl("model", "upload", nonfinite)
    assert r.rc == 1 and "fc2.weight" in r.err and "finite" in r.err, r

    noversion = tmp_path / "noversion"
    noversion.mkdir()
    (noversion / "config.json").write_text(json.dumps(dict(TINY_CONFIG, name="noversion")))
    r = cluster.psctl("model", "upload", noversion)
    assert r.rc == 1 and "no version directory" in r.err, r

    r = cluster.psctl("model", "upload", tmp_path / "does-not-exist")
    assert r.rc == 1 and "does-not-exist" in r.err, r

    assert listed() == before, "a refused upload must not register anything"


def test_upload_of_a_corrupted_copy_of_the_sample_model(cluster, sample_model, tmp_path):
    d = copy_model(sample_model, tmp_path / "corrupt")
    version = max(int(p.name) for p in d.iterdir() if p.name.isdigit())
    path = d / str(version) / "model.safetensors"
    weights = dict(read_safetensors(path))
    name = sorted(weights)[0]
    weights[name] = np.zeros(weights[name].size + 1, np.float32)  # wrong shape
    write_safetensors(path, weights)
    r = cluster.psctl("model", "upload", d)
    assert r.rc == 1 and name in r.err, r

    d2 = copy_model(sample_model, tmp_path / "corrupt-config")
    (d2 / "config.json").write_text((d2 / "config.json").read_text()[:-20])
    r = cluster.psctl("model", "upload", d2)
    assert r.rc == 1 and "config.json" in r.err, r


def test_extra_tensor_in_the_file_is_a_warning(cluster, tmp_path):
    d = tiny_model(tmp_path, "tinyextra")
    t = tiny_tensors()
    t["unused.table"] = np.ones((2, 2), np.float32)
    write_safetensors(d / "1" / "model.safetensors", t)
    r = cluster.psctl("model", "upload", d)
    assert r.rc == 0, r
    assert "warning" in r.err and "unused.table" in r.err, r
    assert any("unused.table" in w for w in r.doc["warnings"])
    m = cluster.ok("model", "show", "tinyextra")
    assert "unused.table" not in {t["name"] for t in m["tensors"]}


# ================================================================ failures and restarts ===

def test_killed_shard_shows_dead_after_3_heartbeats(make_cluster):
    c = make_cluster(replication=1)  # R >= 2 asks a late shard directly: dead sooner
    victim = c.procs["shard-3"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed = time.monotonic()
    while True:
        nodes = c.nodes()
        if not nodes["shard-3"]["alive"]:
            break
        assert time.monotonic() - killed < 10 * HEARTBEAT_MS / 1000 + 2, nodes
        time.sleep(0.02)
    elapsed = time.monotonic() - killed
    # dead = no heartbeat for 3 intervals; the last one came at most ~1 interval before the kill
    assert elapsed >= 1.5 * HEARTBEAT_MS / 1000, f"marked dead after only {elapsed:.3f}s"
    assert nodes["shard-1"]["alive"] and nodes["shard-2"]["alive"]
    text = c.ok("ring", "list", json_mode=False).out
    assert "3 shards, 2 alive" in text
    row = next(line for line in text.splitlines() if line.startswith("shard-3"))
    assert " NO " in row


def test_restarted_coordinator_keeps_nodes_epoch_and_models(make_cluster, tmp_path):
    c = make_cluster()
    d = tiny_model(tmp_path, "tinykeep", seed=8)
    c.ok("model", "upload", d, "--chunk-floats", "64")
    before = c.ok("status")
    shown = c.ok("model", "show", "tinykeep")
    assert c.procs["coordinator"].stop() == 0, c.procs["coordinator"].log()[-2000:]
    r = c.psctl("status")
    assert r.rc == 1 and "UNAVAILABLE" in r.err, r

    c.start_coordinator()
    after = c.ok("status")
    assert after["epoch"] == before["epoch"]
    assert {n["id"]: (n["role"], n["addr"]) for n in after["nodes"]} == \
        {n["id"]: (n["role"], n["addr"]) for n in before["nodes"]}
    assert after["models"] == before["models"]
    assert c.ok("model", "show", "tinykeep") == shown
    # the shards come back by heartbeat, and their data is still there
    c.wait_alive(["shard-1", "shard-2", "shard-3"])
    assert c.ok("status")["epoch"] == before["epoch"]
    assert np.array_equal(pulled(c, "tinykeep", "fc1.weight"), tiny_tensors(8)["fc1.weight"])


def test_ring_add_and_remove_of_a_shard_the_coordinator_did_not_know(make_cluster):
    a = make_cluster(shards=1)
    b = make_cluster(shards=1)
    stranger = b.start_shard("extra-1").addr  # registered with b's coordinator only
    epoch = a.ok("ring", "list")["epoch"]
    r = a.psctl("ring", "add", "--id", "extra-2", "--addr", stranger)
    assert r.rc == 1 and "says its id is 'extra-1'" in r.err, r

    doc = a.ok("ring", "add", "--id", "extra-1", "--addr", stranger, "--weight", "2")
    assert doc == {"id": "extra-1", "addr": stranger, "weight": 2, "epoch": epoch + 1,
                   "state": "in_ring"}
    ring = a.ok("ring", "list")
    assert ring["epoch"] == epoch + 1
    added = next(s for s in ring["shards"] if s["id"] == "extra-1")
    assert added["in_ring"] and added["weight"] == 2 and added["addr"] == stranger
    assert not added["alive"]  # it heartbeats to b's coordinator, not to a's
    r = a.psctl("ring", "add", "--id", "extra-1", "--addr", stranger)
    assert r.rc == 1 and "ALREADY_EXISTS" in r.err, r

    text = a.ok("ring", "remove", "--id", "extra-1", json_mode=False).out
    assert f"node extra-1 removed: ring epoch {epoch + 2}" in text
    ring = a.ok("ring", "list")
    assert [s["id"] for s in ring["shards"]] == ["shard-1"] and ring["epoch"] == epoch + 2


def test_removed_running_shard_stays_off_the_ring_until_added(make_cluster):
    """A running shard that was removed keeps heartbeating; that must not put it back
    on the ring (only `ring add` does), and ring remove of it again says so."""
    a = make_cluster(shards=1)
    extra = a.start_shard("extra-3")
    for _ in range(100):
        ring = a.ok("ring", "list")
        if any(s["id"] == "extra-3" and s["in_ring"] for s in ring["shards"]):
            break
        time.sleep(0.05)
    epoch = ring["epoch"]
    a.ok("ring", "remove", "--id", "extra-3", json_mode=False)
    time.sleep(4 * HEARTBEAT_MS / 1000)  # several heartbeats from the removed shard
    ring = a.ok("ring", "list")
    assert ring["epoch"] == epoch + 1
    assert not any(s["id"] == "extra-3" and s["in_ring"] for s in ring["shards"])
    r = a.psctl("ring", "remove", "--id", "extra-3")
    assert r.rc == 1 and "NOT_FOUND" in r.err, r
    doc = a.ok("ring", "add", "--id", "extra-3", "--addr", extra.addr)
    assert doc["epoch"] == epoch + 2
    ring = a.ok("ring", "list")
    assert any(s["id"] == "extra-3" and s["in_ring"] for s in ring["shards"])
