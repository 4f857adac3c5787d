"""modelref: a numpy reference of the model format, for the end-to-end tests.

The served outputs of a model are compared with `forward` here, an independent
implementation of the same ops (kernels/model_config.h documents them) in numpy:

    config, params = load_model("models/digits_mlp")
    ref = forward(config, params, {"pixels": x})["probabilities"]
    assert np.max(np.abs(served - ref)) <= 1e-5

Weights are read with the small safetensors reader below (no safetensors package):
8-byte little-endian header length, JSON header, then the data, offsets relative to
the end of the header. Inputs and parameters are FP32; every op computes in float64
(so the reference is at least as accurate as the server) and the results are cast to
float32. Ops act on the last axis; the leading dims (batch included) are rows.

Run as a script to check a model on its held-out set:
    .venv/bin/python tests/e2e/modelref.py models/digits_mlp
"""
import json
import pathlib
import struct
import sys

import numpy as np

_DTYPES = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}


def load_safetensors(path):
    """Returns ({name: np.ndarray}, metadata dict). BF16 is widened to float32; other
    dtypes keep their numpy equivalent. Raises ValueError on a malformed file."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise ValueError(f"{path}: header length {hlen} runs past the end of the file")
    header = json.loads(data[8:8 + hlen])
    body = memoryview(data)[8 + hlen:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        shape = tuple(int(d) for d in info["shape"])
        if not 0 <= begin <= end <= len(body):
            raise ValueError(f"{path}: tensor {name!r} offsets [{begin}, {end}] out of range")
        raw = body[begin:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif info["dtype"] in _DTYPES:
            dt = _DTYPES[info["dtype"]]
            if (end - begin) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
                raise ValueError(f"{path}: tensor {name!r} byte count does not match its shape")
            arr = np.frombuffer(raw, dtype=dt)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        tensors[name] = arr.reshape(shape).copy()
    return tensors, metadata


def load_model(model_dir, version=None):
    """Reads MODEL_DIR/config.json and MODEL_DIR/<version>/model.safetensors (the highest
    numbered version when None). Returns (config dict, {name: np.ndarray})."""
    model_dir = pathlib.Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if version is None:
        versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if not versions:
            raise FileNotFoundError(f"{model_dir}: no version directory")
        version = max(versions)
    params, _ = load_safetensors(model_dir / str(version) / "model.safetensors")
    return config, params


def _activation(x, name):
    if name in (None, "none"):
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    raise ValueError(f"unknown activation {name!r}")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(config, params, inputs, outputs=None):
    """Runs the graph of `config` with `params` on `inputs` ({name: array with the full
    shape, batch dim first when max_batch_size > 0}). Returns {output name: float32
    array} for `outputs` (default: every declared output)."""
    batched = config.get("max_batch_size", 0) > 0
    values = {}
    for decl in config["inputs"]:
        name = decl["name"]
        if name not in inputs:
            raise ValueError(f"input {name!r} is missing")
        x = np.asarray(inputs[name], dtype=np.float32)
        want = list(decl["shape"])
        got = list(x.shape)
        if len(got) != len(want) or any(w != -1 and w != g for w, g in zip(want, got)):
            raise ValueError(f"input {name!r}: shape {got} does not match {want}")
        if batched and not 1 <= got[0] <= config["max_batch_size"]:
            raise ValueError(f"input {name!r}: batch size {got[0]} is outside "
                             f"1..{config['max_batch_size']}")
        values[name] = x.astype(np.float64)

    def param(name):
        return np.asarray(params[name], dtype=np.float32).astype(np.float64)

    for layer in config["layers"]:
        op = layer["op"]
        if op == "dense":
            y = values[layer["input"]] @ param(layer["weight"]).T
            if layer.get("bias") is not None:
                y = y + param(layer["bias"])
            y = _activation(y, layer.get("activation"))
        elif op == "relu":
            y = np.maximum(values[layer["input"]], 0.0)
        elif op == "softmax":
            y = _softmax(values[layer["input"]])
        elif op == "add":
            a, b = (values[n] for n in layer["inputs"])
            if a.shape != b.shape:
                raise ValueError(f"add {layer['output']!r}: shapes {a.shape} and {b.shape} differ")
            y = a + b
        elif op == "scale":
            y = values[layer["input"]]
            if layer.get("scale") is not None:
                y = y * param(layer["scale"])
            if layer.get("shift") is not None:
                y = y + param(layer["shift"])
        else:
            raise ValueError(f"unknown op {op!r}")
        values[layer["output"]] = y

    names = outputs if outputs is not None else [o["name"] for o in config["outputs"]]
    return {name: values[name].astype(np.float32) for name in names}


def _main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: modelref.py MODEL_DIR   (checks the model on MODEL_DIR/heldout.json)")
        return 0 if len(argv) == 2 else 2
    model_dir = pathlib.Path(argv[1])
    config, params = load_model(model_dir)
    held = json.loads((model_dir / "heldout.json").read_text())
    x = np.asarray(held["pixels"], dtype=np.float32)
    out = held.get("output", config["outputs"][0]["name"])
    batch = max(config.get("max_batch_size", 0), 1)
    probs = np.concatenate([forward(config, params, {held["input"]: x[i:i + batch]})[out]
                            for i in range(0, len(x), batch)])
    accuracy = float((probs.argmax(axis=1) == np.asarray(held["labels"])).mean())
    print(f"{config['name']}: {len(x)} held-out inputs, accuracy {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
