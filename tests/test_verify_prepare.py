"""make verify's set-up against an empty cache: every step that needs no compiler runs for real.

The model (the real GGUF writer, a tiny shape), the index (real hnswlib), the vocab taken out of
an sdist-shaped archive and the target files are made in a temporary ``CAPSIM_CACHE``; each
artefact cut short the way an interrupted step leaves it is rebuilt, never reused.  The compiler
build is checked with a builder that records its calls: a changed build key rebuilds.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.verify.stack import prepare

gguf = pytest.importorskip("gguf")

TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, ctx=256, dtype="f32", seed=7)
SDIST_ROOT = f"llama_cpp_python-{prepare.LLAMA_CPP_PYTHON_VERSION}"


def _tiny_vocab(path: Path, n: int = 40) -> None:
    """A vocab-only GGUF as llama.cpp's models/ggml-vocab-*.gguf are: tokenizer.* keys, no tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}".encode() for i in range(n)])
    w.add_token_scores([float(-i) for i in range(n)])
    w.add_token_types([1] * n)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    """An archive laid out like the pinned sdist: the vocab and a llama.cpp source folder."""
    vocab = tmp_path / "vocab.gguf"
    _tiny_vocab(vocab)
    archive = tmp_path / "sdist.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(vocab, f"{SDIST_ROOT}/vendor/llama.cpp/models/{prepare.VOCAB_NAME}")
        info = tarfile.TarInfo(f"{SDIST_ROOT}/vendor/llama.cpp/CMakeLists.txt")
        body = b"project(llama)\n"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return archive


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty-cache"  # does not exist yet: the steps make every folder they need
    monkeypatch.setenv("CAPSIM_CACHE", str(empty))
    assert prepare.cache_dir() == empty
    return empty


def test_model_and_vocab_from_an_empty_cache(cache: Path, sdist: Path) -> None:
    vocab = prepare.ensure_vocab(cache, sdist)
    assert vocab == cache / f"llama-{prepare.LLAMA_CPP_PYTHON_VERSION}" / "vocab" / prepare.VOCAB_NAME
    model = prepare.ensure_model(cache, vocab, TINY, name="tiny.gguf")
    assert model == cache / "models" / "tiny.gguf"
    r = gguf.GGUFReader(str(model))
    assert r.fields["llama.block_count"].contents() == 2
    assert r.fields["llama.embedding_length"].contents() == 64
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == 40
    # 2 layers x (4 norms/projections + 3 FFN + 2 norms) + embd + output norm + output = 21 tensors
    assert len(r.tensors) == 2 * 9 + 3
    manifest = json.loads(model.with_suffix(".json").read_text())
    assert manifest["size"] == model.stat().st_size and manifest["key"]["shape"] == TINY
    assert not list((cache / "models").glob(".*tmp-*"))

    # Idempotent: a second call rewrites nothing.
    mtime = model.stat().st_mtime_ns
    assert prepare.ensure_model(cache, vocab, TINY, name="tiny.gguf") == model
    assert model.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["truncated", "no-manifest", "other-shape", "stale-temp-sibling"])
def test_a_cut_short_model_is_rebuilt(cache: Path, sdist: Path, damage: str) -> None:
    vocab = prepare.ensure_vocab(cache, sdist)
    model = prepare.ensure_model(cache, vocab, TINY, name="tiny.gguf")
    good = model.read_bytes()
    if damage == "truncated":
        model.write_bytes(good[: len(good) // 2])
    elif damage == "no-manifest":
        model.with_suffix(".json").unlink()
        model.write_bytes(good[:100])
    elif damage == "other-shape":
        manifest = json.loads(model.with_suffix(".json").read_text())
        manifest["key"]["shape"]["layers"] = 3
        model.with_suffix(".json").write_text(json.dumps(manifest))
    else:
        (model.parent / f".{model.name}.tmp-99999").write_bytes(b"half a model")
        model.unlink()
    assert prepare.ensure_model(cache, vocab, TINY, name="tiny.gguf") == model
    assert model.read_bytes() == good  # fixed seed: the same bytes again
    assert not list(model.parent.glob(".*tmp-*"))


def test_vocab_is_taken_again_when_cut_short(cache: Path, sdist: Path) -> None:
    vocab = prepare.ensure_vocab(cache, sdist)
    whole = vocab.read_bytes()
    vocab.write_bytes(whole[:10])
    assert prepare.ensure_vocab(cache, sdist).read_bytes() == whole


def test_index_from_an_empty_cache_and_rebuilt_without_its_manifest(cache: Path) -> None:
    shape = dict(n=400, dim=16, seed=0)
    folder = prepare.ensure_index(cache, shape)
    assert folder == cache / "search-n400-d16"
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["n"], meta["dim"], meta["seed"]) == (400, 16, 0)
    assert np.load(folder / "queries.npy").shape == (1000, 16)
    index_bytes = (folder / "index.bin").read_bytes()
    mtime = (folder / "index.bin").stat().st_mtime_ns
    assert prepare.ensure_index(cache, shape) == folder
    assert (folder / "index.bin").stat().st_mtime_ns == mtime  # reused as it is

    (folder / "meta.json").unlink()  # interrupted before its manifest
    (folder / "index.bin").write_bytes(index_bytes[:50])
    assert prepare.ensure_index(cache, shape) == folder
    assert (folder / "meta.json").is_file()
    assert (folder / "index.bin").read_bytes() == index_bytes  # one build thread: the same graph


def test_target_files_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    work = tmp_path / "a" / "b" / "verify"
    bin_dir = tmp_path / "bin"
    prepare.write_targets(
        work, bin_dir, tmp_path / "m.gguf", llm_port=18080, search_port=18090, llm_core=1, search_core=0
    )
    target = yaml.safe_load((work / "target.yaml").read_text())
    assert target["llm"]["url"] == "http://127.0.0.1:18080"
    assert target["llm"]["batched_bench"] == str(bin_dir / "llama-batched-bench")
    assert target["retrieval"] == {"url": "http://127.0.0.1:18090", "workers": 1, "cores": [0]}
    alone = yaml.safe_load((work / "target_retrieval.yaml").read_text())
    assert alone["retrieval"] == {"url": "http://127.0.0.1:18090", "workers": 2, "cores": [1]}


class RecordingBuilder:
    """Stands in for cmake: records each build and leaves the two binaries where cmake would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, src: Path, build: Path, flags: tuple[str, ...], jobs: int) -> None:
        assert (src / "CMakeLists.txt").is_file()  # the sdist's llama.cpp tree
        self.calls.append(flags)
        (build / "bin").mkdir(parents=True)
        for t in prepare.TARGETS:
            (build / "bin" / t).write_text(f"#!/bin/sh\necho {t} {' '.join(flags)}\n")


def test_build_is_keyed_by_version_flags_and_compiler(cache: Path, sdist: Path) -> None:
    b = RecordingBuilder()
    cc = "g++ (Debian 14.2.0-19) 14.2.0"
    bin_dir = prepare.ensure_llama(cache, sdist, builder=b, compiler=cc)
    assert len(b.calls) == 1
    assert all(os.access(bin_dir / t, os.X_OK) for t in prepare.TARGETS)
    stamp = (bin_dir.parent / "STAMP").read_text()
    assert f"llama-cpp-python=={prepare.LLAMA_CPP_PYTHON_VERSION}" in stamp and cc in stamp

    prepare.ensure_llama(cache, sdist, builder=b, compiler=cc)
    assert len(b.calls) == 1  # same key: nothing rebuilt

    other = tuple(f.replace("-DGGML_LLAMAFILE=ON", "-DGGML_LLAMAFILE=OFF") for f in prepare.CMAKE_FLAGS)
    prepare.ensure_llama(cache, sdist, flags=other, builder=b, compiler=cc)
    assert len(b.calls) == 2 and "-DGGML_LLAMAFILE=OFF" in b.calls[-1]

    prepare.ensure_llama(cache, sdist, flags=other, builder=b, compiler="clang 19")
    assert len(b.calls) == 3  # another compiler

    (bin_dir.parent / "STAMP").unlink()  # binaries without a stamp: a build cut short
    prepare.ensure_llama(cache, sdist, flags=other, builder=b, compiler="clang 19")
    assert len(b.calls) == 4
    assert not [p for p in cache.iterdir() if p.name.startswith("llama-build-")]  # no build tree left


def test_a_failed_build_leaves_no_binaries_that_look_finished(cache: Path, sdist: Path) -> None:
    def broken(src: Path, build: Path, flags: tuple[str, ...], jobs: int) -> None:
        raise RuntimeError("compiler killed")

    b = RecordingBuilder()
    prepare.ensure_llama(cache, sdist, builder=b, compiler="gcc")
    with pytest.raises(RuntimeError):
        prepare.ensure_llama(cache, sdist, builder=broken, compiler="gcc 2")
    assert not (cache / f"llama-{prepare.LLAMA_CPP_PYTHON_VERSION}" / "STAMP").exists()
    prepare.ensure_llama(cache, sdist, builder=b, compiler="gcc 2")
    assert len(b.calls) == 2


def test_a_failing_compiler_is_named_with_its_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "cmake").write_text('#!/bin/sh\necho "configuring"\necho "error: no C++ compiler" >&2\nexit 3\n')
    (fake / "cmake").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(SystemExit, match=r"`cmake -S .*` exited 3"):
        prepare.cmake_build(tmp_path / "src", tmp_path / "build", prepare.CMAKE_FLAGS, jobs=2)
    assert "error: no C++ compiler" in capsys.readouterr().err


def test_every_step_from_an_empty_cache_hands_the_shell_only_its_paths(
    cache: Path, sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prepare all` as make verify runs it, the compiler aside: a builder that prints on the real
    stdout (as cmake does) must not reach the file the shell sources."""
    import subprocess

    class NoisyBuilder(RecordingBuilder):
        def __call__(self, src: Path, build: Path, flags: tuple[str, ...], jobs: int) -> None:
            subprocess.run(["echo", "-- The C compiler identification is GNU"], check=True)
            super().__call__(src, build, flags, jobs)

    real_llama = prepare.ensure_llama
    monkeypatch.setattr(prepare, "ensure_sdist", lambda c: sdist)
    monkeypatch.setattr(
        prepare, "ensure_llama", lambda c, s, jobs: real_llama(c, s, builder=NoisyBuilder(), compiler="cc")
    )
    monkeypatch.setattr(prepare, "MODEL_SHAPE", TINY)
    monkeypatch.setattr(prepare, "INDEX_SHAPE", dict(n=300, dim=8, seed=0))
    work = tmp_path / "work"
    assert prepare.main(["all", "--work", str(work), "--env-file", str(work / "stack.env")]) == 0
    env = (work / "stack.env").read_text().splitlines()
    assert [line.split("=")[0] for line in env] == ["BIN", "MODEL", "INDEX"]
    shown = subprocess.run(
        ["bash", "-c", f'source {work / "stack.env"}; echo "$BIN|$MODEL|$INDEX"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bin_dir, model, index = (Path(p) for p in shown.split("|"))
    assert (bin_dir / "llama-server").is_file() and model.is_file() and (index / "meta.json").is_file()
    assert (work / "target.yaml").is_file() and (work / "target_retrieval.yaml").is_file()
    assert model.parent == cache / "models" and index.parent == cache
