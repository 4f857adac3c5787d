"""Deleting a model version (psctl model delete) with a replica serving: refused for the
latest version and while the replica serves it, allowed once it moved to a newer one; the version's
chunks are freed on the shards (Health bytes drop, pulls of it fail), and the replica
keeps answering from the newer version."""
import json
import shutil
import tempfile

import grpc
import numpy as np
import pytest

import inference_pb2 as pb
import ps_pb2 as ppb
from serve_cluster import MODEL_DIR, PSCTL, Cluster, infer_raw, poll, stub, wait_ready


def shard_bytes(cluster):
    total = 0
    for name, port in cluster.ports.items():
        if not name.startswith("shard-"):
            continue
        fn = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
            "/ps.ParameterServer/Health", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ppb.HealthResponse.FromString)
        total += fn(ppb.HealthRequest(), timeout=5).bytes
    return total


@pytest.fixture
def cluster():
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(tmp, shards=2, replicas=1)
        try:
            yield c
        finally:
            bad = c.stop()
        assert not bad, "\n".join(bad)


def test_delete_waits_for_replicas_then_frees_chunks(cluster, tmp_path):
    x = np.array(json.loads((MODEL_DIR / "heldout.json").read_text())["pixels"][:2], np.float32)
    model = tmp_path / "digits_mlp"
    shutil.copytree(MODEL_DIR, model)
    shutil.copytree(model / "1", model / "2")  # version 2: the same weights
    cluster.psctl("model", "upload", str(model), "--version", "1")
    addr = cluster.serve[0]
    wait_ready(addr)
    one_version = shard_bytes(cluster)
    assert one_version > 0

    def delete(version, *extra):
        return cluster.psctl("model", "delete", "digits_mlp", "--version", str(version), *extra,
                             check=False)

    # the latest version (which replicas serve, or are about to): refused, nothing freed
    r = delete(1)
    assert r.returncode == 1, r
    assert "its latest version" in r.stderr and "FAILED_PRECONDITION" in r.stderr, r.stderr
    assert shard_bytes(cluster) == one_version

    # a newer version: the replica moves to it, then version 1 may go
    cluster.psctl("model", "upload", str(model), "--version", "2")
    s = stub(addr)
    poll(lambda: infer_raw(s, x).model_version == "2", "the replica never moved to version 2")
    assert shard_bytes(cluster) == 2 * one_version
    r = poll(lambda: (lambda r: r if r.returncode == 0 else None)(delete(1)),
             "version 1 was never deleted after the replica moved on", timeout=10)
    assert "deleted model digits_mlp version 1: freed 4 of its 4 chunks" in r.stdout, r.stdout
    assert shard_bytes(cluster) == one_version
    r = cluster.psctl("pull", "digits_mlp", "fc2.bias", "--version", "1", check=False)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr
    r = delete(1)  # gone
    assert r.returncode == 1 and "no model digits_mlp version 1" in r.stderr, r.stderr
    r = cluster.psctl("model", "delete", "digits_mlp", check=False)
    assert r.returncode == 2 and "--version" in r.stderr, r.stderr

    # the replica still answers from version 2
    resp = infer_raw(s, x)
    assert resp.model_version == "2"
    # --force deletes even a served version
    r = delete(2, "--force")
    assert r.returncode == 0, r.stderr
    assert shard_bytes(cluster) == 0
