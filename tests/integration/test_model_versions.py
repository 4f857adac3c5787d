"""Versions of a model live side by side on the shards (a chunk's key includes the model
version): uploading version 2 never changes what version 1 holds, pushes go to the
version they name (the latest by default), and a replica of version 1 would keep its
values. Checked through psctl, value for value."""
import numpy as np

from conftest import TINY_CONFIG, tiny_tensors, write_model, write_safetensors


def pulled(cluster, model, tensor, version=None):
    args = ["pull", model, tensor] + (["--version", str(version)] if version else [])
    doc = cluster.ok(*args)
    return np.array(doc["values"], dtype=np.float32).reshape(-1)


def test_versions_live_side_by_side(cluster, tmp_path):
    d = write_model(tmp_path / "tinyside", dict(TINY_CONFIG, name="tinyside"), tiny_tensors(21),
                    version=1)
    write_safetensors(d / "2" / "model.safetensors", tiny_tensors(22))
    assert cluster.ok("model", "upload", d, "--version", "1", "--chunk-floats", "16")["version"] == 1
    v1 = {t: pulled(cluster, "tinyside", t, 1) for t in tiny_tensors(21)}
    assert cluster.ok("model", "upload", d, "--version", "2", "--chunk-floats", "16")["version"] == 2
    for t, want in tiny_tensors(21).items():  # version 1 is untouched by the upload of 2
        assert np.array_equal(pulled(cluster, "tinyside", t, 1), want.reshape(-1)), t
        assert np.array_equal(v1[t], want.reshape(-1)), t
    for t, want in tiny_tensors(22).items():  # the latest is version 2, with its own values
        assert np.array_equal(pulled(cluster, "tinyside", t), want.reshape(-1)), t

    # a push goes to the version it names, the latest by default
    cluster.ok("push", "tinyside", "fc2.bias", "--add", "--fill", "1")
    cluster.ok("push", "tinyside", "fc2.bias", "--add", "--fill", "10", "--version", "1")
    assert np.array_equal(pulled(cluster, "tinyside", "fc2.bias"),
                          tiny_tensors(22)["fc2.bias"] + np.float32(1))
    assert np.array_equal(pulled(cluster, "tinyside", "fc2.bias", 1),
                          tiny_tensors(21)["fc2.bias"] + np.float32(10))

    # each version's chunks have keys of their own: locate lists different keys
    k1 = {c["key"] for c in cluster.ok("locate", "tinyside", "fc1.weight", "--version", "1")["chunks"]}
    k2 = {c["key"] for c in cluster.ok("locate", "tinyside", "fc1.weight")["chunks"]}
    assert k1 and k2 and not (k1 & k2)
    # and status counts the latest version's chunks as reachable
    model = next(m for m in cluster.ok("status")["models"] if m["name"] == "tinyside")
    assert model["latest"] == 2 and model["reachable"] == model["chunks"], model

    # psctl model versions lists them; an unknown model is NOT_FOUND
    doc = cluster.ok("model", "versions", "tinyside")
    assert [(m["version"], m["latest"]) for m in doc["models"]] == [(1, False), (2, True)], doc
    text = cluster.ok("model", "versions", "tinyside", json_mode=False).out
    assert "2 (latest)" in text and "tinyside" in text, text
    r = cluster.psctl("model", "versions", "no-such-model")
    assert r.rc == 1 and "no model 'no-such-model' is registered" in r.err, r
    r = cluster.psctl("model", "versions")
    assert r.rc == 2 and "which model?" in r.err, r


def test_delete_with_a_dead_shard_frees_the_rest(make_cluster, tmp_path):
    import signal
    c = make_cluster(replication=1)  # one copy: the dead shard's chunks stay there
    d = write_model(tmp_path / "tinydel", dict(TINY_CONFIG, name="tinydel"), tiny_tensors(31),
                    version=1)
    write_safetensors(d / "2" / "model.safetensors", tiny_tensors(32))
    c.ok("model", "upload", d, "--version", "1", "--chunk-floats", "8")
    c.ok("model", "upload", d, "--version", "2", "--chunk-floats", "8")
    owners = {ch["shard"] for ch in c.ok("locate", "tinydel", "fc1.weight", "--version", "1")["chunks"]}
    victim = sorted(owners)[0]
    c.procs[victim].stop(sig=signal.SIGKILL)  # dies with version 1's chunks on it
    r = c.psctl("model", "delete", "tinydel", "--version", "1")
    assert r.rc == 1, r
    assert "out of the registry, but not every chunk could be freed" in r.err, r.err
    assert "chunks freed" in r.err, r.err
    assert [m["version"] for m in c.ok("model", "versions", "tinydel")["models"]] == [2]
    # version 2 on the live shards is untouched
    live = [s for s in ("shard-1", "shard-2", "shard-3") if s != victim]
    for ch in c.ok("locate", "tinydel", "fc2.bias", "--check")["chunks"]:
        if ch["shard"] in live:
            assert ch["held"], ch


def test_a_deleted_version_number_is_never_given_again(cluster, tmp_path):
    """A registration without a version number (RegisterModel version 0) gets the highest
    number the model ever had + 1: after the latest was deleted (forced: a replica may
    still serve it) it is not given again, also after the coordinator restarts, so a
    client asking for the old number, or a replica still holding it, never meets another
    model under it."""
    import grpc
    import coordinator_pb2 as cpb
    d = write_model(tmp_path / "tinyreuse", dict(TINY_CONFIG, name="tinyreuse"), tiny_tensors(41),
                    version=1)
    assert cluster.ok("model", "upload", d, "--version", "1", "--chunk-floats", "16")["version"] == 1

    def register_next():
        ch = grpc.insecure_channel(cluster.coordinator)
        get = ch.unary_unary("/ps.Coordinator/GetModel",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=cpb.ModelInfo.FromString)
        reg = ch.unary_unary("/ps.Coordinator/RegisterModel",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=cpb.RegisterModelResponse.FromString)
        info = get(cpb.GetModelRequest(name="tinyreuse", version=1), timeout=10)
        info.version = 0
        info.published = 0
        v = reg(cpb.RegisterModelRequest(model=info), timeout=10).version
        ch.close()
        return v

    assert register_next() == 2
    cluster.ok("model", "delete", "tinyreuse", "--version", "2", "--force")
    assert register_next() == 3  # not 2 again
    cluster.ok("model", "delete", "tinyreuse", "--version", "3", "--force")
    cluster.procs["coordinator"].stop()
    cluster.start_coordinator()
    assert [m["version"] for m in cluster.ok("model", "versions", "tinyreuse")["models"]] == [1]
    assert register_next() == 4  # the restarted coordinator remembers that 3 was given


def test_hostile_delete_requests(cluster):
    import grpc
    import coordinator_pb2 as cpb
    ch = grpc.insecure_channel(cluster.coordinator)

    def call(method, req, resp):
        fn = ch.unary_unary(f"/ps.Coordinator/{method}", request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=resp.FromString)
        try:
            fn(req, timeout=10)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""

    code, why = call("DeleteModel", cpb.DeleteModelRequest(name="x" * 10000, version=1), cpb.ModelInfo)
    assert code == grpc.StatusCode.NOT_FOUND, why
    code, why = call("DeleteModel", cpb.DeleteModelRequest(name="tinyside", version=0), cpb.ModelInfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, why
    code, why = call("DeleteModel", cpb.DeleteModelRequest(), cpb.ModelInfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, why
    hb = cpb.HeartbeatRequest(id="shard-1", serving=[cpb.ModelRef(name="m", version=i)
                                                     for i in range(300)])
    code, why = call("Heartbeat", hb, cpb.HeartbeatResponse)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in why, why
    assert cluster.ok("status")["epoch"] > 0  # still up
