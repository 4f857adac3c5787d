#!/usr/bin/env python3
"""scripts/export_model.py: writes a model directory in the project's format
(DIR/config.json + DIR/<version>/model.safetensors, kernels/modelfile/model_config.h)
from numpy weights and a config, or from a PyTorch nn.Sequential.

As a library (imports no torch at module level; only export_torch needs it):

    write_model_dir(out_dir, config, tensors, version=1)
        config: the config.json dict; tensors: {name: array}. Checks the tensors against
        the layers (scripts/model_shapes.py: every named parameter present, shapes that
        fit the layers, no unused tensor, outputs made with the declared shapes), then
        writes config.json and the safetensors file (F32, little-endian, tensors in name
        order, the JSON header padded with spaces to 8 bytes). Returns the directory.
    export_torch(module, example_input_shape, out_dir, name, input_name="input",
                 output_name="output", max_batch_size=64, version=1)
        Walks an nn.Sequential (nested ones too) into layers: Linear -> dense, Conv2d ->
        conv2d (a ReLU/GELU/Tanh/Sigmoid right after a Linear or Conv2d becomes its
        activation), MaxPool2d, AvgPool2d, Flatten(1, -1), Unflatten (or any parameterless
        module with `export_reshape = True`, e.g. x.reshape(len(x), 1, 8, 8)) -> reshape,
        LayerNorm over the last axis, Softmax over the last axis, ReLU, GELU (erf form),
        Tanh, Sigmoid. Anything else (or an unsupported setting: ceil_mode, a padding
        mode other than zeros, ...) raises ValueError naming the module. Tensor names
        are the module's state_dict keys. example_input_shape is one sample's shape
        (without the batch dim). Returns (config, tensors).

As a command:
    export_model.py numpy --weights W.npz --config C.json --out DIR [--version 1]
    export_model.py torch --module pkg.mod:factory [--state-dict F.pt] --input-shape 1,8,8
                          --out DIR [--name N] [--input-name input] [--output-name output]
                          [--max-batch-size 64] [--version 1]
The numpy path needs only numpy; the torch path needs PyTorch (e.g. a venv with torch:
`/path/to/torchenv/bin/python scripts/export_model.py torch ...`). `factory` is called
with no arguments and must return the nn.Sequential; the state dict (torch.save of
module.state_dict()) is loaded into it when given.
"""
import argparse
import importlib
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import model_shapes  # noqa: E402

ACTIVATIONS = {"ReLU": "relu", "GELU": "gelu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
SUPPORTED = ("Sequential, Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, Unflatten, LayerNorm, "
             "Softmax, ReLU, GELU, Tanh, Sigmoid, or a module with export_reshape = True")


def write_safetensors(path, tensors):
    """{name: float32 array} as a safetensors file (names sorted, data 8-byte aligned)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    pathlib.Path(path).write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def write_model_dir(out_dir, config, tensors, version=1):
    """See the module comment. Raises ValueError before writing anything when the
    config and the tensors disagree."""
    for field in ("name", "inputs", "outputs", "layers"):
        if field not in config:
            raise ValueError(f"config has no {field!r}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, not {version!r}")
    f32 = {str(k): model_shapes.as_f32(k, v) for k, v in tensors.items()}
    model_shapes.check_model(config, f32)
    out = pathlib.Path(out_dir)
    (out / str(version)).mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(out / str(version) / "model.safetensors", f32)
    return out


# ------------------------------------------------------------------ torch ---

def _leaves(module, prefix=""):
    """(path, module) of every non-Sequential module, in execution order."""
    import torch.nn as nn
    for child_name, child in module.named_children():
        path = f"{prefix}{child_name}"
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, path + ".")
        else:
            yield path, child


def _refuse(path, m, why):
    raise ValueError(f"module {path!r} ({type(m).__name__}): {why}")


def _last_axis(path, m, dim, ndim):
    if dim is None or dim not in (-1, ndim - 1):
        _refuse(path, m, f"dim={dim}: only the last axis (-1) is supported")


def _window(path, m, v, what):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(v) != 2 or not all(isinstance(x, int) for x in v):
        _refuse(path, m, f"{what}={v!r} is not an integer or a pair")
    return list(v)


def _layer(path, m, shape_in, shape_out, tensors):
    """The config layer of one module (None for a module that changes nothing), its
    parameters added to tensors under their state_dict names."""
    import torch.nn as nn
    kind = type(m).__name__

    def param(field):
        t = getattr(m, field, None)
        if t is None:
            return None
        tensors[f"{path}.{field}"] = t.detach().cpu().numpy().astype(np.float32)
        return f"{path}.{field}"

    if isinstance(m, nn.Linear):
        return {"op": "dense", "weight": param("weight"), "bias": param("bias")}
    if kind in ACTIVATIONS and type(m) is getattr(nn, kind):
        if kind == "GELU" and m.approximate != "none":
            _refuse(path, m, f"approximate={m.approximate!r}: only the erf form is supported")
        return {"op": ACTIVATIONS[kind]}
    if isinstance(m, nn.Softmax):
        _last_axis(path, m, m.dim, len(shape_in))
        return {"op": "softmax"}
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            _refuse(path, m, f"padding_mode={m.padding_mode!r}: only zeros is supported")
        if isinstance(m.padding, str) and m.padding != "valid":
            _refuse(path, m, f"padding={m.padding!r}: give the padding as numbers")
        pad = [0, 0] if isinstance(m.padding, str) else _window(path, m, m.padding, "padding")
        return {"op": "conv2d", "weight": param("weight"), "bias": param("bias"),
                "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
                "stride": list(m.stride), "padding": pad, "dilation": list(m.dilation),
                "groups": m.groups}
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        if m.ceil_mode:
            _refuse(path, m, "ceil_mode=True is not supported")
        layer = {"op": "maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d",
                 "kernel_size": _window(path, m, m.kernel_size, "kernel_size"),
                 "stride": _window(path, m, m.stride or m.kernel_size, "stride"),
                 "padding": _window(path, m, m.padding, "padding")}
        if isinstance(m, nn.MaxPool2d) and (m.return_indices or
                                            _window(path, m, m.dilation, "dilation") != [1, 1]):
            _refuse(path, m, "dilation other than 1 and return_indices are not supported")
        if isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                _refuse(path, m, "divisor_override is not supported")
            layer["count_include_pad"] = bool(m.count_include_pad)
        return layer
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim not in (-1, len(shape_in) - 1):
            _refuse(path, m, f"start_dim={m.start_dim}, end_dim={m.end_dim}: only "
                    "Flatten(1, -1) is supported")
        return {"op": "flatten"}
    if isinstance(m, nn.Unflatten) or getattr(m, "export_reshape", False) is True:
        if any(True for _ in m.parameters()) or shape_out[0] != shape_in[0]:
            _refuse(path, m, "a reshape must keep the batch dim and hold no parameters")
        return {"op": "reshape", "shape": list(shape_out[1:])}
    if isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1:
            _refuse(path, m, f"normalized_shape={list(m.normalized_shape)}: only the last "
                    "axis is supported")
        return {"op": "layernorm", "weight": param("weight"), "bias": param("bias"),
                "eps": float(m.eps)}
    _refuse(path, m, f"not supported (export_torch handles {SUPPORTED})")


def torch_layers(module, example_input_shape, input_name="input", output_name="output"):
    """(layers, tensors, per-sample output shape) of an nn.Sequential; see export_torch."""
    import torch
    import torch.nn as nn
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"export_torch walks an nn.Sequential, not {type(module).__name__}")
    x = torch.zeros((2, *example_input_shape), dtype=torch.float32)
    layers, tensors, value = [], {}, input_name
    with torch.no_grad():
        for path, m in _leaves(module):
            y = m(x)
            layer = _layer(path, m, tuple(x.shape), tuple(y.shape), tensors)
            x = y
            prev = layers[-1] if layers else None
            if (layer["op"] in ACTIVATIONS.values() and prev and prev["op"] in ("dense", "conv2d")
                    and prev.get("activation", "none") == "none"):
                prev["activation"] = layer["op"]
                continue
            rest = {k: v for k, v in layer.items() if v is not None and k != "op"}
            layers.append({"op": layer["op"], "input": value, "output": path, **rest})
            value = path
    if not layers:
        raise ValueError("the module has no layers")
    layers[-1]["output"] = output_name
    return layers, tensors, tuple(x.shape[1:])


def export_torch(module, example_input_shape, out_dir, name, input_name="input",
                 output_name="output", max_batch_size=64, version=1):
    """See the module comment."""
    if max_batch_size < 1:
        raise ValueError("export_torch makes batched models: max_batch_size must be >= 1")
    shape = tuple(int(d) for d in example_input_shape)
    layers, tensors, out_shape = torch_layers(module.eval(), shape, input_name, output_name)
    config = {
        "name": name, "max_batch_size": max_batch_size,
        "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, *shape]}],
        "outputs": [{"name": output_name, "datatype": "FP32", "shape": [-1, *out_shape]}],
        "layers": layers,
    }
    write_model_dir(out_dir, config, tensors, version)
    return config, tensors


# ------------------------------------------------------------------ command ---

def _load_factory(spec):
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise SystemExit(f"export_model: --module {spec!r} must be pkg.mod:factory")
    sys.path.insert(0, str(pathlib.Path.cwd()))
    return getattr(importlib.import_module(mod), attr)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Write a model directory (config.json + <version>/model.safetensors). "
        "The numpy command needs only numpy; the torch command needs PyTorch.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("numpy", help="numpy weights (.npz) + a config.json (no torch needed)")
    n.add_argument("--weights", required=True, help="an .npz of {tensor name: array}")
    n.add_argument("--config", required=True, help="config.json (kernels/modelfile/model_config.h)")
    t = sub.add_parser("torch", help="an nn.Sequential from a factory function (needs torch)")
    t.add_argument("--module", required=True, help="pkg.mod:factory, importable from the cwd")
    t.add_argument("--state-dict", help="a torch.save'd state_dict to load into the module")
    t.add_argument("--input-shape", required=True, help="one sample's shape, e.g. 1,8,8 or 64")
    t.add_argument("--name", help="the model's name (default: the --out folder's name)")
    t.add_argument("--input-name", default="input")
    t.add_argument("--output-name", default="output")
    t.add_argument("--max-batch-size", type=int, default=64)
    for p in (n, t):
        p.add_argument("--out", required=True, help="the model directory to write")
        p.add_argument("--version", type=int, default=1)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "numpy":
            with np.load(a.weights) as z:
                tensors = {k: z[k] for k in z.files}
            config = json.loads(pathlib.Path(a.config).read_text())
            write_model_dir(a.out, config, tensors, a.version)
        else:
            try:
                import torch
            except ImportError:
                print("export_model: the torch command needs PyTorch; run it with a Python "
                      "that has torch installed", file=sys.stderr)
                return 1
            module = _load_factory(a.module)()
            if a.state_dict:
                module.load_state_dict(torch.load(a.state_dict, map_location="cpu",
                                                  weights_only=True))
            shape = [int(d) for d in a.input_shape.split(",")]
            export_torch(module, shape, a.out, a.name or pathlib.Path(a.out).resolve().name,
                         a.input_name, a.output_name, a.max_batch_size, a.version)
    except (ValueError, OSError, KeyError, ImportError, AttributeError) as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.out}/config.json and {a.out}/{a.version}/model.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
