"""Set up the reference stack of ``make verify`` in a cache folder, step by step, idempotently.

The cache (``$CAPSIM_CACHE``, default ``~/.cache/capsim``) holds, once per machine::

    src/llama_cpp_python-<ver>.tar.gz      the pinned sdist from PyPI (sha256-checked)
    llama-<ver>/vocab/ggml-vocab-llama-spm.gguf   the Llama tokenizer, taken from the sdist
    llama-<ver>/bin/{llama-server,llama-batched-bench}   compiled from the sdist's llama.cpp
    llama-<ver>/STAMP                      the build key: version, sha256, targets, flags, compiler
    models/capsim-llama-124m-f16.gguf      a Llama of random weights (+ .json manifest)
    search-n50000-d384/                    an hnswlib index (meta.json is its manifest)

Every artefact is made in a temporary sibling and renamed into place; its manifest is written
last.  So an artefact cut short by an interrupted step (a partial model file, an index folder
without its manifest, binaries without a matching STAMP) is never taken for a finished one: it
is detected and rebuilt.  A build whose key differs from the STAMP (another version, other
flags, another compiler) is rebuilt too.

    python -m sim.verify.stack.prepare all --work build/verify   # every step; prints the paths
    python -m sim.verify.stack.prepare model                     # one step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sim.run.folder import sha256_file

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TARGETS = ("llama-server", "llama-batched-bench")
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"
# The model of the LLM half: ~124 M parameters, 12 layers x 768, GQA 12/4 heads, f16 (~250 MB).
MODEL_SHAPE: dict[str, Any] = dict(
    layers=12, hidden=768, heads=12, kv_heads=4, ffn=2048, ctx=4096, dtype="f16", seed=1234
)
MODEL_NAME = "capsim-llama-124m-f16.gguf"
INDEX_SHAPE: dict[str, int] = dict(n=50000, dim=384, seed=0)
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries (libc, libstdc++, libgomp only)
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",  # plain HTTP on loopback
    "-DLLAMA_BUILD_UI=OFF",  # the web UI would be downloaded; the API needs none
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_NATIVE=ON",  # -march=native: tuned for this CPU
    "-DGGML_LLAMAFILE=ON",
    "-DGGML_CUDA=OFF",
    "-DGGML_METAL=OFF",
    "-DGGML_VULKAN=OFF",
    "-DGGML_HIP=OFF",
    "-DGGML_SYCL=OFF",
    "-DGGML_OPENCL=OFF",
    "-DGGML_RPC=OFF",
    "-DGGML_BLAS=OFF",
)

Builder = Callable[[Path, Path, tuple[str, ...], int], None]


def cache_dir() -> Path:
    return Path(os.environ.get("CAPSIM_CACHE") or Path.home() / ".cache" / "capsim")


def log(msg: str) -> None:
    print(f"prepare: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` (a path to fill); renamed onto ``final`` only on success.

    The sibling lies in the same folder, so the rename is atomic; a step interrupted before the
    rename leaves only a ``.tmp-`` sibling, which the next run removes.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_manifest(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON manifest atomically: it is the last thing a step writes."""
    with staged(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# ------------------------------------------------------------------------------------------ sdist
def ensure_sdist(cache: Path, pip: tuple[str, ...] = (sys.executable, "-m", "pip")) -> Path:
    """The pinned llama-cpp-python sdist (it carries llama.cpp's sources and the Llama vocab)."""
    sdist = cache / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if sdist.is_file() and sha256_file(sdist) == LLAMA_CPP_PYTHON_SHA256:
        return sdist
    log(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist) from PyPI")
    sdist.parent.mkdir(parents=True, exist_ok=True)
    spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    with tempfile.TemporaryDirectory(prefix=".download-", dir=sdist.parent) as tmp:
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "--no-binary", ":all:", spec, "-d", tmp], check=True)
        got = Path(tmp) / sdist.name
        if not got.is_file():
            raise SystemExit(f"error: pip download of {spec} left no {sdist.name}")
        digest = sha256_file(got)
        if digest != LLAMA_CPP_PYTHON_SHA256:
            raise SystemExit(f"error: sha256 of {sdist.name} is {digest}, expected {LLAMA_CPP_PYTHON_SHA256}")
        os.replace(got, sdist)
    return sdist


def _member(tar: tarfile.TarFile, suffix: str) -> tarfile.TarInfo:
    for m in tar.getmembers():
        if m.isfile() and m.name.endswith(suffix):
            return m
    raise SystemExit(f"error: {tar.name!r} has no {suffix}")


def ensure_vocab(cache: Path, sdist: Path) -> Path:
    """The Llama SentencePiece vocab GGUF, taken from the sdist (no compiler needed)."""
    vocab = cache / f"llama-{LLAMA_CPP_PYTHON_VERSION}" / "vocab" / VOCAB_NAME
    manifest = vocab.with_suffix(".json")
    doc = read_manifest(manifest)
    if vocab.is_file() and doc is not None and doc.get("size") == vocab.stat().st_size:
        return vocab
    with tarfile.open(sdist) as tar:
        member = _member(tar, f"/vendor/llama.cpp/models/{VOCAB_NAME}")
        src = tar.extractfile(member)
        assert src is not None  # a regular file member
        with staged(vocab) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
    write_manifest(manifest, {"size": vocab.stat().st_size, "from": sdist.name})
    return vocab


# ------------------------------------------------------------------------------------------ model
def model_key(shape: dict[str, Any], vocab: Path) -> dict[str, Any]:
    return {"shape": dict(shape), "vocab": vocab.name, "vocab_size": vocab.stat().st_size}


def ensure_model(cache: Path, vocab: Path, shape: dict[str, Any] | None = None, name: str = MODEL_NAME) -> Path:
    """A Llama GGUF of random weights; remade when its manifest is missing or names another shape."""
    shape = dict(MODEL_SHAPE if shape is None else shape)
    model = cache / "models" / name
    manifest = model.with_suffix(".json")
    key = model_key(shape, vocab)
    doc = read_manifest(manifest)
    if model.is_file() and doc is not None and doc.get("key") == key and doc.get("size") == model.stat().st_size:
        return model
    log(f"making {model}")
    from sim.verify.stack import make_model  # deferred: numpy and gguf, for this step only

    argv = ["--vocab-gguf", str(vocab)]
    for k, v in shape.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    manifest.unlink(missing_ok=True)
    with staged(model) as tmp, contextlib.redirect_stdout(sys.stderr):
        make_model.main([*argv, "-o", str(tmp)])
    write_manifest(manifest, {"key": key, "size": model.stat().st_size})
    return model


# ------------------------------------------------------------------------------------------ index
def index_dir(cache: Path, shape: dict[str, int] | None = None) -> Path:
    s = INDEX_SHAPE if shape is None else shape
    suffix = "" if s.get("seed", 0) == 0 else f"-s{s['seed']}"
    return cache / f"search-n{s['n']}-d{s['dim']}{suffix}"


def ensure_index(cache: Path, shape: dict[str, int] | None = None) -> Path:
    """An hnswlib index of Gaussian vectors; meta.json, written last, is its manifest."""
    s = dict(INDEX_SHAPE if shape is None else shape)
    folder = index_dir(cache, s)
    meta = read_manifest(folder / "meta.json")
    files_there = all((folder / f).is_file() for f in ("index.bin", "queries.npy"))
    if files_there and meta is not None and all(meta.get(k) == v for k, v in s.items()):
        return folder
    log(f"building {folder}")
    from sim.verify.stack import search_service  # deferred: hnswlib, for this step only

    with staged(folder) as tmp, contextlib.redirect_stdout(sys.stderr):
        argv = ["build", "--dir", str(tmp), "--n", str(s["n"]), "--dim", str(s["dim"]), "--seed", str(s["seed"])]
        if search_service.main(argv) != 0:
            raise SystemExit(f"error: building the index {folder} failed")
    return folder


# ------------------------------------------------------------------------------------------ build
def compiler_id() -> str:
    """The C++ compiler's first line of ``--version`` (part of the build key)."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return f"{cxx}: not found"
    return out.splitlines()[0].strip() if out else cxx


def build_key(flags: tuple[str, ...] = CMAKE_FLAGS, compiler: str | None = None) -> str:
    """What the binaries were built from: a change of any part rebuilds them."""
    parts = [
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        f"sha256={LLAMA_CPP_PYTHON_SHA256}",
        "targets=" + ",".join(TARGETS),
        "flags=" + " ".join(flags),
        "compiler=" + (compiler_id() if compiler is None else compiler),
    ]
    return "\n".join(parts) + "\n"


def cmake_build(src: Path, build: Path, flags: tuple[str, ...], jobs: int) -> None:
    """Configure and compile the two targets; the compiler's output goes to a log, shown on failure."""
    compile_cmd = ["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *TARGETS]
    build.mkdir(parents=True, exist_ok=True)
    with open(build / "build.log", "w") as out:
        for cmd in (["cmake", "-S", str(src), "-B", str(build), *flags], compile_cmd):
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = (build / "build.log").read_text(errors="replace").splitlines()[-40:]
                print("\n".join(tail), file=sys.stderr)
                raise SystemExit(f"error: `{' '.join(cmd[:3])} ...` exited {rc} (the compiler's last lines above)")


def ensure_llama(
    cache: Path,
    sdist: Path,
    flags: tuple[str, ...] = CMAKE_FLAGS,
    jobs: int = 2,
    builder: Builder = cmake_build,
    compiler: str | None = None,
) -> Path:
    """llama-server and llama-batched-bench, compiled once per build key; returns their folder."""
    prefix = cache / f"llama-{LLAMA_CPP_PYTHON_VERSION}"
    key = build_key(flags, compiler)
    stamp = prefix / "STAMP"
    bins = [prefix / "bin" / t for t in TARGETS]
    if all(os.access(b, os.X_OK) for b in bins) and stamp.is_file() and stamp.read_text() == key:
        return prefix / "bin"
    log(f"compiling llama.cpp ({', '.join(TARGETS)}) into {prefix / 'bin'} with -j{jobs} (10-20 min on 2 cores)")
    t0 = time.monotonic()
    stamp.unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="llama-build-", dir=cache))
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(work / "src", filter="data")
        (src,) = (work / "src").iterdir()
        builder(src / "vendor" / "llama.cpp", work / "build", flags, jobs)
        with staged(prefix / "bin") as tmp:
            tmp.mkdir()
            for t in TARGETS:
                shutil.copy2(work / "build" / "bin" / t, tmp / t)
                (tmp / t).chmod(0o755)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with staged(stamp) as tmp:
        tmp.write_text(key)
    log(f"compiled in {time.monotonic() - t0:.0f} s")
    return prefix / "bin"


# ------------------------------------------------------------------------------------------ all
def write_targets(
    work: Path, bin_dir: Path, model: Path, llm_port: int, search_port: int, llm_core: int, search_core: int
) -> None:
    """The two target files ``capsim verify`` reads (the LLM stack, the search service alone)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "target.yaml").write_text(
        f"""llm:
  url: http://127.0.0.1:{llm_port}
  parallel: 4
  n_batch: 2048
  ctx_size: 8192
  cores: [{llm_core}]
  threads: 1
  batched_bench: {bin_dir / "llama-batched-bench"}
  model_path: {model}
retrieval:
  url: http://127.0.0.1:{search_port}
  workers: 1
  cores: [{search_core}]
"""
    )
    (work / "target_retrieval.yaml").write_text(
        f"""retrieval:
  url: http://127.0.0.1:{search_port}
  workers: 2
  cores: [{llm_core}]
"""
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", "sdist", "vocab", "model", "index", "llama"])
    p.add_argument("--work", type=Path, default=Path("build/verify"), help="where the target files go (step all)")
    p.add_argument("--env-file", type=Path, help="step all: write BIN, MODEL and INDEX here, for the shell to source")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "2")))
    p.add_argument("--llm-port", type=int, default=18080)
    p.add_argument("--search-port", type=int, default=18090)
    p.add_argument("--llm-core", type=int, default=1)
    p.add_argument("--search-core", type=int, default=0)
    a = p.parse_args(argv)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if a.step == "index":
        print(ensure_index(cache))
        return 0
    t0 = time.monotonic()
    sdist = ensure_sdist(cache)
    t_sdist = time.monotonic() - t0
    if a.step == "sdist":
        print(sdist)
        return 0
    vocab = ensure_vocab(cache, sdist)
    if a.step in ("vocab", "model"):
        print(ensure_model(cache, vocab) if a.step == "model" else vocab)
        return 0
    times: dict[str, float] = {}

    def timed(step: str, make: Callable[[], Path]) -> Path:
        t0 = time.monotonic()
        path = make()
        times[f"{step}_s"] = round(time.monotonic() - t0, 1)
        return path

    bin_dir = timed("llama", lambda: ensure_llama(cache, sdist, jobs=a.jobs))
    if a.step == "llama":
        print(bin_dir)
        return 0
    model = timed("model", lambda: ensure_model(cache, vocab))
    index = timed("index", lambda: ensure_index(cache))
    write_targets(a.work, bin_dir, model, a.llm_port, a.search_port, a.llm_core, a.search_core)
    with staged(a.work / "setup.json") as tmp:  # how long each step took (a cached step: ~0 s)
        tmp.write_text(json.dumps({"sdist_s": round(t_sdist, 1), **times, "cache": str(cache)}) + "\n")
    env = "".join(
        f"{name}={shlex.quote(str(path))}\n" for name, path in (("BIN", bin_dir), ("MODEL", model), ("INDEX", index))
    )
    if a.env_file is None:
        print(env, end="")
    else:  # a file, not stdout: the compiler and pip print on stdout too
        with staged(a.env_file) as tmp:
            tmp.write_text(env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
