"""The training fields of config.json through the operator's tools: psctl model upload
refuses a bad "training" or "tables" field with a message naming it, and psctl model
optimizer shows and changes a tensor's, a table's or the default optimizer in the
coordinator's registry (what training clients read), refusing what the kind does not
use, values out of range, unknown tables and malformed arguments."""
from conftest import TINY_CONFIG, tiny_tensors, write_model

TRAINING = {
    "training": {"optimizer": {"type": "adam", "lr": 0.001},
                 "tensors": {"fc2.bias": {"type": "sgd", "lr": 0.1, "momentum": 0.9}}},
    "tables": [{"name": "emb", "dim": 4, "seed": 3, "init": {"type": "uniform", "scale": 0.1},
                "optimizer": {"type": "adagrad", "lr": 0.05}}],
}


def upload(cluster, tmp_path, name, extra, seed=5):
    d = write_model(tmp_path / name, dict(TINY_CONFIG, name=name, **extra), tiny_tensors(seed))
    return cluster.psctl("model", "upload", d, "--chunk-floats", "64")


def test_upload_refuses_bad_training_fields(cluster, tmp_path):
    bad = [
        ({"training": {"optimizer": {"type": "lion"}}}, "type"),
        ({"training": {"optimizer": {"type": "sgd", "beta1": 0.9}}}, "beta1"),
        ({"training": {"optimizer": {"type": "adam", "lr": 0}}}, "lr"),
        ({"training": {"optimiser": {}}}, "optimiser"),
        ({"training": {"consistency": "ssp", "staleness": -3}}, "staleness"),
        ({"tables": [{"name": "t", "dim": 0}]}, "dim"),
        ({"tables": [{"name": "t", "dim": 2}, {"name": "t", "dim": 2}]}, "twice"),
    ]
    for i, (extra, needle) in enumerate(bad):
        r = upload(cluster, tmp_path, f"badtrain{i}", extra)
        assert r.rc == 1 and needle in r.err, (extra, r)
        names = [m["name"] for m in cluster.ok("model", "list")["models"]]
        assert f"badtrain{i}" not in names


def test_optimizer_show_and_change(cluster, tmp_path):
    r = upload(cluster, tmp_path, "trainable", TRAINING)
    assert r.rc == 0, r

    def show(*args):
        return cluster.ok("model", "optimizer", "trainable", *args)["optimizer"]

    assert show().startswith("adam lr=0.001 ")
    assert show("--tensor", "fc1.weight").startswith("adam ")  # inherits the default
    assert show("--tensor", "fc2.bias").startswith("sgd lr=0.1 momentum=0.9")
    assert show("--table", "emb").startswith("adagrad lr=0.05")

    # a tensor's own optimizer is made from the default, then changed
    doc = cluster.ok("model", "optimizer", "trainable", "--tensor", "fc1.weight", "lr=0.5",
                     "beta1=0.8")
    assert doc["optimizer"].startswith("adam lr=0.5 weight_decay=0 beta1=0.8"), doc
    assert show().startswith("adam lr=0.001 ")  # the default is untouched
    # a new kind for a table, with its defaults and one field
    assert show("--table", "emb", "--type", "ftrl", "l1=0.01").startswith("ftrl lr=0.05 l1=0.01")
    # the change is in the registry's config.json (what clients read)
    cfg = cluster.ok("model", "show", "trainable")["config"]
    assert cfg["tables"][0]["optimizer"]["type"] == "ftrl", cfg
    assert cfg["training"]["tensors"]["fc1.weight"]["lr"] == 0.5, cfg
    text = cluster.ok("model", "optimizer", "trainable", "--tensor", "fc2.bias",
                      json_mode=False).out
    assert "tensor fc2.bias: sgd lr=0.1" in text, text

    refused = [
        (("--tensor", "fc2.bias", "beta1=0.5"), 1, "beta1"),        # SGD has no beta1
        (("lr=-1",), 1, "lr"),                                      # out of range
        (("--table", "nope", "lr=0.1"), 1, "no table \"nope\""),    # unknown table
        (("--type", "lion"), 1, "type"),                            # unknown kind
        (("lr",), 2, "FIELD=VALUE"),                                # malformed
        (("lr=fast",), 2, "finite number"),
        (("lr=nan",), 2, "finite number"),
        (("--tensor", "a", "--table", "b", "lr=1"), 2, "not both"),
    ]
    for args, rc, needle in refused:
        r = cluster.psctl("model", "optimizer", "trainable", *args)
        assert r.rc == rc and needle in r.err, (args, r)
    r = cluster.psctl("model", "optimizer", "no-such-model", "lr=1")
    assert r.rc == 1 and "no model" in r.err, r
    assert show("--tensor", "fc2.bias").startswith("sgd lr=0.1 momentum=0.9")  # unchanged

    # a model without any optimizer says so
    assert upload(cluster, tmp_path, "plain", {}).rc == 0
    doc = cluster.ok("model", "optimizer", "plain")
    assert doc["optimizer"] is None, doc
