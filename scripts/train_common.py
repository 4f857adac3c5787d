"""train_common.py: what the training scripts (scripts/train_*.py) share: running under
the repository's .venv, finding the cluster (run/cluster.env, or PS_RUN_DIR's), writing
a model directory (config.json + <version>/model.safetensors), uploading it with psctl."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"


def reexec_in_venv(script):
    """Runs `script` again with the repository's .venv python when started with another."""
    if pathlib.Path(sys.executable).resolve() != VENV_PY.resolve() and VENV_PY.exists():
        sys.exit(subprocess.call([str(VENV_PY), script] + sys.argv[1:]))


def cluster_env():
    """KEY=VALUE pairs of the cluster's env file (scripts/cluster up writes it)."""
    env = {}
    path = pathlib.Path(os.environ.get("PS_RUN_DIR", ROOT / "run")) / "cluster.env"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    return env


def endpoints(coordinator, serve, who):
    """(coordinator, a serving replica): the arguments, else $PS_COORDINATOR and the env
    file; exits with a message when no replica is known."""
    env = cluster_env()
    coordinator = coordinator or os.environ.get("PS_COORDINATOR") or env.get("COORDINATOR")
    serve = serve or (env.get("SERVE", "").split(",")[0] or None)
    if not serve:
        sys.exit(f"{who}: no serving replica: pass --serve or run scripts/cluster up")
    return coordinator, serve


def write_model(root, config, params, version=1):
    """root/<name>/config.json and root/<name>/<version>/model.safetensors (F32 tensors
    in name order, the header padded to 8 bytes). Returns the model directory."""
    d = pathlib.Path(root) / config["name"]
    (d / str(version)).mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config, indent=2))
    header, blobs, off = {}, [], 0
    for k in sorted(params):
        b = params[k].astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(params[k].shape),
                     "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (d / str(version) / "model.safetensors").write_bytes(
        len(h).to_bytes(8, "little") + h + b"".join(blobs))
    return d


def psctl(coordinator):
    """The psctl command line of the build (PS_BUILD_DIR, else build/), in JSON mode."""
    build = pathlib.Path(os.environ.get("PS_BUILD_DIR", ROOT / "build"))
    return [str(build / "ps" / "psctl"), "--json"] + (
        ["--coordinator", coordinator] if coordinator else [])


def upload(coordinator, model_dir, who):
    """psctl model upload; returns the registered version (exits with psctl's message)."""
    r = subprocess.run(psctl(coordinator) + ["model", "upload", str(model_dir)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{who}: upload failed: {r.stderr.strip()}")
    return json.loads(r.stdout)["version"]
