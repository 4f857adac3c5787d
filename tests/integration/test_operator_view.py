"""What an operator sees when things go wrong, through the programs themselves:
psctl status counts the chunks the shards can really serve (not what heartbeats
last said), a shard says in its log when it loses the coordinator and when it comes
back, and a process that dies of a fatal signal leaves the signal and a backtrace in
its log."""
import signal
import time

import numpy as np

from conftest import TINY_CONFIG, tiny_tensors, write_model


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_status_counts_reachable_chunks(make_cluster, tmp_path):
    c = make_cluster(replication=1)  # one copy: a dead shard's chunks are unreachable
    d = write_model(tmp_path / "tinyreach", dict(TINY_CONFIG, name="tinyreach"), tiny_tensors(3))
    c.ok("model", "upload", d, "--chunk-floats", "8")
    model = next(m for m in c.ok("status")["models"] if m["name"] == "tinyreach")
    assert model["chunks"] > 3 and model["reachable"] == model["chunks"], model
    assert model["unreachable"] is None
    text = c.ok("status", json_mode=False).out
    assert f"{model['chunks']}/{model['chunks']}" in text and "WARNING" not in text, text

    # a shard holding some of its chunks dies and comes back empty (no WAL yet)
    held = {ch["shard"] for ch in c.ok("locate", "tinyreach", "fc1.weight")["chunks"]}
    victim = sorted(held)[0]
    c.procs[victim].stop(sig=signal.SIGKILL)
    model = next(m for m in c.ok("status")["models"] if m["name"] == "tinyreach")
    assert 0 < model["reachable"] < model["chunks"], model
    assert victim in model["unreachable"] or "UNAVAILABLE" in model["unreachable"], model
    c.start_shard(victim)
    c.wait_alive([victim])
    model = next(m for m in c.ok("status")["models"] if m["name"] == "tinyreach")
    assert 0 < model["reachable"] < model["chunks"], model
    assert "no shard holds it" in model["unreachable"], model
    text = c.ok("status", json_mode=False).out
    assert "UNREACHABLE" in text and "WARNING: model tinyreach version 1" in text, text


def test_shard_logs_losing_and_regaining_the_coordinator(make_cluster):
    c = make_cluster(shards=1)
    shard = c.procs["shard-1"]
    c.procs["coordinator"].stop()
    wait_for(lambda: "lost the coordinator" in shard.log(), what="the shard to log the loss")
    c.start_coordinator()  # the same port and state directory
    wait_for(lambda: "is back after" in shard.log(), what="the shard to log the return")
    assert shard.alive()
    assert shard.log().count("lost the coordinator") == 1  # once per outage, not per retry


def test_fatal_signal_leaves_a_backtrace(make_cluster):
    c = make_cluster(shards=1)
    shard = c.procs["shard-1"]
    shard.proc.send_signal(signal.SIGSEGV)
    rc = shard.proc.wait(timeout=10)
    assert rc == -signal.SIGSEGV  # it still dies of the signal
    log = shard.log()
    assert "ps-shard[shard-1] FATAL SIGSEGV (signal 11)" in log, log
    assert "backtrace" in log and "(end of backtrace)" in log, log
    c.procs.pop("shard-1")  # nothing left to stop
