"""Reference optimizers in numpy (float64), written from the formulas in
ps/common/train_spec.h, for checking what the shards compute. Each step function takes
the weights, the gradient, the state (a list of arrays, or None for a fresh one), the
step number (1 for the first) and the hyper-parameters, and returns (weights, state)."""
import numpy as np

DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "adagrad": {"lr": 0.01, "eps": 1e-10, "initial_accumulator": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "ftrl": {"lr": 0.05, "l1": 0.0, "l2": 0.0, "beta": 1.0},
}
KINDS = {"sgd": 1, "adagrad": 2, "adam": 3, "ftrl": 4}


def hyper(kind, **kw):
    h = dict(DEFAULTS[kind])
    h.update(kw)
    return h


def step(kind, w, g, state, t, h):
    w = np.asarray(w, np.float64)
    g = np.asarray(g, np.float64)
    if kind == "sgd":
        g = g + h["weight_decay"] * w
        m = g if state is None else h["momentum"] * state[0] + g
        return w - h["lr"] * m, [m]
    if kind == "adagrad":
        g = g + h["weight_decay"] * w
        acc = (np.full_like(w, h["initial_accumulator"]) if state is None else state[0]) + g * g
        return w - h["lr"] * g / (np.sqrt(acc) + h["eps"]), [acc]
    if kind == "adam":
        g = g + h["weight_decay"] * w
        m, v = (np.zeros_like(w), np.zeros_like(w)) if state is None else state
        m = h["beta1"] * m + (1 - h["beta1"]) * g
        v = h["beta2"] * v + (1 - h["beta2"]) * g * g
        mhat = m / (1 - h["beta1"] ** t)
        vhat = v / (1 - h["beta2"] ** t)
        return w - h["lr"] * mhat / (np.sqrt(vhat) + h["eps"]), [m, v]
    if kind == "ftrl":
        z, n = (np.zeros_like(w), np.zeros_like(w)) if state is None else state
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / h["lr"]
        z = z + g - sigma * w
        n = n + g * g
        w = np.where(np.abs(z) <= h["l1"], 0.0,
                     -(z - np.sign(z) * h["l1"]) / ((h["beta"] + np.sqrt(n)) / h["lr"] + h["l2"]))
        return w, [z, n]
    raise ValueError(kind)
