#!/usr/bin/env python3
"""kserve_client.py: a small KServe v2 gRPC client for the demo and for people trying
the cluster by hand. It speaks the standard protocol (inference.GRPCInferenceService,
stubs generated from proto/inference.proto), so it works against any KServe v2 server.

  kserve_client.py wait-ready --addr HOST:PORT --model NAME [--timeout S]
  kserve_client.py accuracy   --addr HOST:PORT --model NAME --data heldout.json
  kserve_client.py predict    --addr HOST:PORT --model NAME --data heldout.json [--index I]
  kserve_client.py watch      --addr A,B --model NAME --data heldout.json --since PV [--timeout S]

Run it with the project's venv: .venv/bin/python scripts/kserve_client.py ...
"""
import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUBS = ROOT / "build" / "pystubs-kserve"  # inference stubs only: nothing else to shadow


def load_stubs():
    """Generates the Python stubs of proto/inference.proto once, then imports them."""
    src = ROOT / "proto" / "inference.proto"
    out = STUBS / "inference_pb2.py"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        from grpc_tools import protoc
        STUBS.mkdir(parents=True, exist_ok=True)
        if protoc.main(["protoc", f"-I{src.parent}", f"--python_out={STUBS}",
                        f"--grpc_python_out={STUBS}", str(src)]) != 0:
            sys.exit("kserve_client: cannot compile proto/inference.proto")
    sys.path.insert(0, str(STUBS))
    import inference_pb2
    import inference_pb2_grpc
    return inference_pb2, inference_pb2_grpc


pb, pb_grpc = load_stubs()
import grpc  # noqa: E402  (after the stubs, which import it too)
import numpy as np  # noqa: E402


def stub(addr):
    ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20),
                                              ("grpc.max_send_message_length", 64 << 20)])
    return pb_grpc.GRPCInferenceServiceStub(ch)


def infer(s, model, input_name, pixels):
    """One ModelInfer with raw FP32 input; returns (outputs as arrays, version, param_version)."""
    x = np.ascontiguousarray(pixels, dtype="<f4")
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    resp = s.ModelInfer(req, timeout=10)
    outs = {}
    for i, o in enumerate(resp.outputs):
        outs[o.name] = np.frombuffer(resp.raw_output_contents[i], dtype="<f4").reshape(list(o.shape))
    pv = resp.parameters["param_version"].int64_param if "param_version" in resp.parameters else None
    return outs, resp.model_version, pv


def load_data(path):
    d = json.loads(pathlib.Path(path).read_text())
    return d["input"], d["output"], np.array(d["pixels"], dtype=np.float32), np.array(d["labels"])


def cmd_wait_ready(a):
    s = stub(a.addr)
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            if s.ModelReady(pb.ModelReadyRequest(name=a.model), timeout=2).ready:
                print(f"{a.addr}: model {a.model} ready")
                return 0
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    print(f"{a.addr}: model {a.model} not ready after {a.timeout}s", file=sys.stderr)
    return 1


def cmd_accuracy(a):
    inp, out, x, y = load_data(a.data)
    s = stub(a.addr)
    meta = s.ModelConfig(pb.ModelConfigRequest(name=a.model), timeout=5).config
    batch = max(1, meta.max_batch_size)
    correct = 0
    version = None
    for i in range(0, len(x), batch):
        outs, version, _ = infer(s, a.model, inp, x[i:i + batch])
        correct += int((outs[out].argmax(axis=1) == y[i:i + batch]).sum())
    acc = correct / len(x)
    print(f"{a.addr}: accuracy {acc:.4f} ({correct}/{len(x)} held-out digits), model {a.model} version {version}")
    return 0 if acc >= a.min else 1


def fmt(p):
    return " ".join(f"{v:.3f}" for v in p)


def cmd_predict(a):
    inp, out, x, y = load_data(a.data)
    s = stub(a.addr)
    outs, version, pv = infer(s, a.model, inp, x[a.index:a.index + 1])
    p = outs[out][0]
    print(f"{a.addr}: digit #{a.index} (label {y[a.index]}): predicted {int(p.argmax())}; "
          f"version {version}, param_version {pv}")
    print(f"    probabilities [{fmt(p)}]")
    return 0


def cmd_watch(a):
    """Polls each replica until its param_version passes --since; prints the output."""
    inp, out, x, y = load_data(a.data)
    rc = 0
    t0 = time.monotonic()
    for addr in a.addr.split(","):
        s = stub(addr)
        while True:
            outs, version, pv = infer(s, a.model, inp, x[a.index:a.index + 1])
            if pv is not None and pv > a.since:
                p = outs[out][0]
                print(f"{addr}: after {1000 * (time.monotonic() - t0):.1f} ms: predicted {int(p.argmax())}; "
                      f"version {version}, param_version {pv}")
                print(f"    probabilities [{fmt(p)}]")
                break
            if time.monotonic() - t0 > a.timeout:
                print(f"{addr}: the update did not show within {a.timeout}s", file=sys.stderr)
                rc = 1
                break
            time.sleep(0.002)
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ["wait-ready", "accuracy", "predict", "watch"]:
        p = sub.add_parser(name)
        p.add_argument("--addr", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--timeout", type=float, default=30)
        if name != "wait-ready":
            p.add_argument("--data", required=True)
            p.add_argument("--index", type=int, default=0)
        if name == "accuracy":
            p.add_argument("--min", type=float, default=0.0, help="exit 1 below this accuracy")
        if name == "watch":
            p.add_argument("--since", type=int, required=True)
    a = ap.parse_args()
    try:
        return {"wait-ready": cmd_wait_ready, "accuracy": cmd_accuracy, "predict": cmd_predict,
                "watch": cmd_watch}[a.cmd](a)
    except grpc.RpcError as e:
        print(f"kserve_client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
