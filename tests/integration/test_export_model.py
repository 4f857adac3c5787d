"""scripts/export_model.py: model directories written from numpy weights (no torch
needed) are byte-for-byte what the format says and what psctl uploads; mistakes are
refused, naming the layer and tensor, before anything is written; the torch path
(skipped where torch is not importable, as in the project's .venv) turns an
nn.Sequential into layers and refuses modules it cannot express, naming them.
"""
import importlib.util
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import PSCTL, SOURCE, read_safetensors

sys.path.insert(0, str(SOURCE / "scripts"))
import export_model  # noqa: E402

SCRIPT = SOURCE / "scripts" / "export_model.py"


def image_config():
    """conv2d + relu, maxpool2d, flatten, dense + gelu, layernorm, scale, dense, softmax."""
    return {
        "name": "exported_small", "max_batch_size": 8,
        "inputs": [{"name": "img", "datatype": "FP32", "shape": [-1, 2, 6, 6]}],
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}],
        "layers": [
            {"op": "conv2d", "input": "img", "output": "c", "weight": "conv.weight",
             "bias": "conv.bias", "out_channels": 4, "kernel_size": 3, "padding": 1,
             "activation": "relu"},
            {"op": "maxpool2d", "input": "c", "output": "p", "kernel_size": 2},
            {"op": "flatten", "input": "p", "output": "f"},
            {"op": "dense", "input": "f", "output": "h", "weight": "fc1.weight",
             "bias": "fc1.bias", "activation": "gelu"},
            {"op": "layernorm", "input": "h", "output": "n", "weight": "ln.weight",
             "bias": "ln.bias", "eps": 1e-5},
            {"op": "scale", "input": "n", "output": "s", "scale": "sc.scale"},
            {"op": "dense", "input": "s", "output": "logits", "weight": "fc2.weight"},
            {"op": "softmax", "input": "logits", "output": "probs"},
        ],
    }


def image_tensors(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"conv.weight": (4, 2, 3, 3), "conv.bias": (4,), "fc1.weight": (8, 36),
              "fc1.bias": (8,), "ln.weight": (8,), "ln.bias": (8,), "sc.scale": (8,),
              "fc2.weight": (3, 8)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def run_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_safetensors_layout(tmp_path):
    tensors = image_tensors()
    tensors["fc2.weight"] = tensors["fc2.weight"].astype(np.float64)  # written as F32
    export_model.write_model_dir(tmp_path / "m", image_config(), tensors, version=3)
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == image_config()
    data = (tmp_path / "m" / "3" / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0  # the data starts 8-byte aligned
    header = json.loads(data[8:8 + n])
    assert list(header) == sorted(tensors)
    offset = 0
    for name in sorted(tensors):
        t = header[name]
        assert t["dtype"] == "F32" and t["shape"] == list(tensors[name].shape)
        assert t["data_offsets"] == [offset, offset + 4 * tensors[name].size]
        offset = t["data_offsets"][1]
    assert len(data) == 8 + n + offset
    back = read_safetensors(tmp_path / "m" / "3" / "model.safetensors")
    for name, a in tensors.items():
        np.testing.assert_array_equal(back[name], a.astype(np.float32))


def test_numpy_cli_output_uploads_and_pulls_back(cluster, tmp_path):
    """The C side (psctl model upload: the config parser, the safetensors reader,
    model_config_resolve) takes what the numpy command writes, values intact."""
    if not PSCTL.exists():
        pytest.skip("psctl is not built")
    tensors = image_tensors(1)
    np.savez(tmp_path / "w.npz", **tensors)
    (tmp_path / "c.json").write_text(json.dumps(image_config()))
    r = run_cli("numpy", "--weights", tmp_path / "w.npz", "--config", tmp_path / "c.json",
                "--out", tmp_path / "model")
    assert r.returncode == 0, r.stderr
    up = cluster.ok("model", "upload", str(tmp_path / "model"))
    assert up["version"] >= 1
    for name, a in tensors.items():
        doc = cluster.ok("pull", "exported_small", name)
        np.testing.assert_array_equal(np.array(doc["values"], np.float32).reshape(doc["shape"]), a)


def broken(change):
    config, tensors = image_config(), image_tensors()
    change(config, tensors)
    return config, tensors


MISTAKES = {
    "missing": (lambda c, t: t.pop("fc1.bias"), "bias tensor 'fc1.bias' is not among"),
    "columns": (lambda c, t: t.update({"fc1.weight": np.zeros((8, 35), np.float32)}),
                "'fc1.weight' has 35 columns, the input has 36 features"),
    "bias_len": (lambda c, t: t.update({"fc1.bias": np.zeros(7, np.float32)}),
                 "bias 'fc1.bias' has 7 elements, the layer needs 8"),
    "conv": (lambda c, t: t.update({"conv.weight": np.zeros((4, 2, 5, 5), np.float32)}),
             "weight 'conv.weight' has shape [4, 2, 5, 5], the layer needs [4, 2, 3, 3]"),
    "unused": (lambda c, t: t.update({"extra": np.zeros(2, np.float32)}),
               "tensors no layer uses: ['extra']"),
    "output": (lambda c, t: c["outputs"][0].update(shape=[-1, 4]),
               "output 'probs' is declared [4] per sample; the graph makes [3]"),
    "unknown_op": (lambda c, t: c["layers"][2].update(op="flatten2"), "unknown op 'flatten2'"),
    "order": (lambda c, t: c["layers"][0].update(input="f"), "reads 'f', which no earlier"),
    "nan": (lambda c, t: t["ln.bias"].__setitem__(0, np.nan), "'ln.bias' holds NaN"),
    "name_twice": (lambda c, t: c["layers"][1].update(output="c"), "output name 'c' is already"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_mistakes_are_refused_before_writing(tmp_path, mistake):
    change, words = MISTAKES[mistake]
    config, tensors = broken(change)
    with pytest.raises(ValueError) as e:
        export_model.write_model_dir(tmp_path / "m", config, tensors)
    assert words in str(e.value)
    assert not (tmp_path / "m").exists()


def test_cli_reports_a_mistake(tmp_path):
    tensors = image_tensors()
    del tensors["sc.scale"]
    np.savez(tmp_path / "w.npz", **tensors)
    (tmp_path / "c.json").write_text(json.dumps(image_config()))
    r = run_cli("numpy", "--weights", tmp_path / "w.npz", "--config", tmp_path / "c.json",
                "--out", tmp_path / "model")
    assert r.returncode == 1
    assert "export_model: layer 5 (s, scale): scale tensor 'sc.scale' is not among" in r.stderr
    assert not (tmp_path / "model").exists()


def test_help_and_no_torch_at_import():
    r = run_cli("--help")
    assert r.returncode == 0 and "needs PyTorch" in r.stdout and "numpy" in r.stdout
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import export_model; print('torch' in sys.modules)",
                        str(SOURCE / "scripts")], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_torch_command_without_torch_says_so(tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here")
    r = run_cli("torch", "--module", "m:f", "--input-shape", "4", "--out", tmp_path / "m")
    assert r.returncode == 1 and "the torch command needs PyTorch" in r.stderr, r.stderr


# ------------------------------------------------------------------ torch ---

def test_torch_sequential_export(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Unflatten(1, (2, 6, 6)), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1,
                                                    count_include_pad=False),
                      nn.Flatten(), nn.Sequential(nn.Linear(36, 8), nn.GELU()), nn.LayerNorm(8),
                      nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid(), nn.Softmax(dim=-1))
    config, tensors = export_model.export_torch(m, [72], tmp_path / "t", "t", "x", "y", 16)
    ops = [(l["op"], l.get("activation")) for l in config["layers"]]
    assert ops == [("reshape", None), ("conv2d", "relu"), ("maxpool2d", None),
                   ("avgpool2d", None), ("flatten", None), ("dense", "gelu"),
                   ("layernorm", None), ("tanh", None), ("dense", "sigmoid"), ("softmax", None)]
    assert config["inputs"][0]["shape"] == [-1, 72] and config["outputs"][0]["shape"] == [-1, 3]
    assert config["layers"][-1]["output"] == "y" and config["layers"][0]["shape"] == [2, 6, 6]
    assert config["layers"][3]["count_include_pad"] is False
    state = {k: v.numpy() for k, v in m.state_dict().items()}
    assert sorted(tensors) == sorted(state)  # named as the state dict names them
    back = read_safetensors(tmp_path / "t" / "1" / "model.safetensors")
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize("bad,words", [
    ("nn.Dropout(0.1)", "module '1' (Dropout): not supported"),
    ("nn.Conv2d(1, 1, 1, padding_mode='reflect')", "padding_mode='reflect'"),
    ("nn.GELU(approximate='tanh')", "only the erf form"),
    ("nn.MaxPool2d(2, ceil_mode=True)", "ceil_mode=True"),
    ("nn.Softmax(dim=1)", "dim=1: only the last axis"),
    ("nn.Flatten(2)", "only Flatten(1, -1)"),
])
def test_torch_refuses_what_it_cannot_express(tmp_path, bad, words):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    m = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), eval(bad))  # noqa: S307 - fixed strings
    with pytest.raises(ValueError) as e:
        export_model.export_torch(m, [16], tmp_path / "t", "t")
    assert words in str(e.value)
    assert not (tmp_path / "t").exists()


def test_torch_cli(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "netdef.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import netdef
    finally:
        sys.path.remove(str(tmp_path))
    m = netdef.make()
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    r = subprocess.run([sys.executable, str(SCRIPT), "torch", "--module", "netdef:make",
                        "--state-dict", "sd.pt", "--input-shape", "4", "--out", "mlp"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "mlp" / "config.json").read_text())
    assert config["name"] == "mlp" and [l["op"] for l in config["layers"]] == ["dense", "dense"]
    back = read_safetensors(tmp_path / "mlp" / "1" / "model.safetensors")
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())
