"""model_shapes.py: the cheap checks scripts/export_model.py runs on a config.json and its
tensors before writing a model directory (kernels/modelfile/model_config.h is the
authority: psctl model upload runs the real parser; this catches the common mistakes
on the exporting side, with messages that name the layer and the tensor).

check_model(config, tensors) walks the layers in order, tracking each value's
per-sample shape (without the batch dim; None where this walk does not know it), and
raises ValueError when a parameter a layer names is missing, has the wrong rank, or
disagrees with the shape the layer gives it (dense's in-features, conv2d's
out_channels/kernel/groups, a bias or layernorm length), when a tensor no layer uses
is given, when a name is used twice, or when an output is not produced (or has another
shape than declared). Pure Python + numpy, no torch.
"""
import math

import numpy as np

PARAM_FIELDS = ("weight", "bias", "scale", "shift")
UNARY = ("relu", "gelu", "tanh", "sigmoid", "softmax")


def _pair(v, what):
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise ValueError(f"{what} must be an integer or [h, w], not {v!r}")


def _window_out(size, kernel, stride, pad, dilation, where):
    span = dilation * (kernel - 1) + 1
    if size + 2 * pad < span:
        raise ValueError(f"{where}: window {span} does not fit the padded size {size + 2 * pad}")
    return (size + 2 * pad - span) // stride + 1


def _image(layer, shape, where):
    """Output [C', P, Q] of conv2d / maxpool2d / avgpool2d on [C, H, W] (None: unknown)."""
    if shape is None:
        return None
    if len(shape) != 3:
        raise ValueError(f"{where}: input has per-sample shape {list(shape)}, needs [C, H, W]")
    k = _pair(layer["kernel_size"], f"{where}: kernel_size")
    s = _pair(layer.get("stride", k if layer["op"] != "conv2d" else 1), f"{where}: stride")
    p = _pair(layer.get("padding", 0), f"{where}: padding")
    d = _pair(layer.get("dilation", 1), f"{where}: dilation")
    c = layer["out_channels"] if layer["op"] == "conv2d" else shape[0]
    return (c, _window_out(shape[1], k[0], s[0], p[0], d[0], where),
            _window_out(shape[2], k[1], s[1], p[1], d[1], where))


def _need(tensors, layer, field, ndim, where):
    """The layer's parameter `field` (None when absent), checked for rank."""
    name = layer.get(field)
    if name is None:
        return None
    if name not in tensors:
        raise ValueError(f"{where}: {field} tensor {name!r} is not among the tensors given")
    t = tensors[name]
    if t.ndim != ndim:
        raise ValueError(f"{where}: {field} {name!r} has shape {list(t.shape)}; needs {ndim} dims")
    return t


def _check_len(t, n, field, layer, where):
    if t is not None and n is not None and t.shape[0] != n:
        raise ValueError(f"{where}: {field} {layer[field]!r} has {t.shape[0]} elements, "
                         f"the layer needs {n}")


def _layer(layer, values, tables, tensors, where):
    """The per-sample shape of the layer's output (None: unknown), after its checks."""
    op = layer.get("op")
    if op in ("add", "concat"):
        a, b = (values[n] for n in layer["inputs"])
        if a is None or b is None:
            return None
        if op == "add":
            if a != b:
                raise ValueError(f"{where}: adds shapes {list(a)} and {list(b)}")
            return a
        return a[:-1] + (a[-1] + b[-1],)
    x = values[layer["input"]]
    if op == "dense":
        w = _need(tensors, layer, "weight", 2, where)
        if x is not None and x[-1] != w.shape[1]:
            raise ValueError(f"{where}: weight {layer['weight']!r} has {w.shape[1]} columns, the "
                             f"input has {x[-1]} features")
        _check_len(_need(tensors, layer, "bias", 1, where), w.shape[0], "bias", layer, where)
        return None if x is None else x[:-1] + (w.shape[0],)
    if op in UNARY:
        return x
    if op in ("layernorm", "scale"):
        for field in ("weight", "bias") if op == "layernorm" else ("scale", "shift"):
            _check_len(_need(tensors, layer, field, 1, where), None if x is None else x[-1],
                       field, layer, where)
        return x
    if op == "embedding_bag":
        if layer.get("table") not in tables:
            raise ValueError(f"{where}: table {layer.get('table')!r} is not declared in "
                             "\"tables\"")
        return (tables[layer["table"]],)
    if op == "conv2d":
        w = _need(tensors, layer, "weight", 4, where)
        groups = layer.get("groups", 1)
        want = (layer["out_channels"], None if x is None else x[0] // groups,
                *_pair(layer["kernel_size"], f"{where}: kernel_size"))
        if any(n is not None and n != g for n, g in zip(want, w.shape)):
            raise ValueError(f"{where}: weight {layer['weight']!r} has shape {list(w.shape)}, "
                             f"the layer needs {[n if n is not None else '?' for n in want]}")
        _check_len(_need(tensors, layer, "bias", 1, where), w.shape[0], "bias", layer, where)
        return _image(layer, x, where)
    if op in ("maxpool2d", "avgpool2d"):
        return _image(layer, x, where)
    if op == "flatten":
        return None if x is None else (math.prod(x),)
    if op == "reshape":
        shape = tuple(layer["shape"])
        if x is not None and math.prod(x) != math.prod(shape):
            raise ValueError(f"{where}: reshapes {list(x)} ({math.prod(x)} elements) to "
                             f"{list(shape)}")
        return shape
    raise ValueError(f"{where}: unknown op {op!r}")


def check_model(config, tensors):
    """Raises ValueError on the first mistake found (see the module comment)."""
    batched = config.get("max_batch_size", 0) > 0
    tables = {t["name"]: t["dim"] for t in config.get("tables", [])}
    values, used = {}, set()
    for decl in config["inputs"]:
        shape = tuple(decl["shape"][1:] if batched else decl["shape"])
        values[decl["name"]] = None if any(d < 0 for d in shape) else shape
    for i, layer in enumerate(config["layers"]):
        where = f"layer {i} ({layer.get('name', layer.get('output'))}, {layer.get('op')})"
        for name in [layer["input"]] if "input" in layer else layer.get("inputs", []):
            if name not in values:
                raise ValueError(f"{where}: reads {name!r}, which no earlier layer or input makes")
        out = layer["output"]
        if out in values or out in tensors:
            raise ValueError(f"{where}: output name {out!r} is already used")
        values[out] = _layer(layer, values, tables, tensors, where)
        used.update(layer[f] for f in PARAM_FIELDS if layer.get(f) is not None)
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"tensors no layer uses: {unused}")
    for decl in config["outputs"]:
        if decl["name"] not in values:
            raise ValueError(f"output {decl['name']!r} is made by no layer")
        got = values[decl["name"]]
        want = tuple(decl["shape"][1:] if batched else decl["shape"])
        if got is not None and got != want:
            raise ValueError(f"output {decl['name']!r} is declared {list(want)} per sample; "
                             f"the graph makes {list(got)}")


def as_f32(name, a):
    """a as a C-contiguous little-endian float32 array; ValueError if not finite numbers."""
    try:
        out = np.ascontiguousarray(a, dtype="<f4")
    except (TypeError, ValueError) as e:
        raise ValueError(f"tensor {name!r} is not an array of numbers ({e})") from None
    if not np.all(np.isfinite(out)):
        raise ValueError(f"tensor {name!r} holds NaN or infinity")
    return out
