"""Extract capsim's per-operation step-cost tables from aiconfigurator's measured operation database.

aiconfigurator (NVIDIA, Apache-2.0) ships, per GPU system and serving engine, kernels timed in
isolation: GEMMs by (m, n, k, dtype), decode ("generation") and prefill ("context") attention by
batch, sequence length and head layout, and the engine's all-reduce by message size and GPU
count.  This tool reads those tables from the pinned package and writes, for every dense model of
capsim's catalog, tensor parallelism 1/2/4/8 and weight dtype BF16/FP8/NVFP4, what one transformer
step costs on each GPU with each engine, as curves capsim evaluates without the package
(``sim/data/silicon/perop/<gpu>.json``, read by :mod:`sim.physics.perop`):

* ``m``: the token counts (rows of the GEMM) the GEMM tables were measured at;
* ``gemm``: per projection (``qkv``, ``o``, ``gate_up``, ``down``; one layer, one GPU's shard
  under tensor parallelism) and the ``lm_head``, the latency in ms at each ``m``, bilinear in
  (n, k) between measured shapes at that ``m``;
* ``allreduce``: one all-reduce of ``m * hidden`` BF16 elements at the model's TP (0 at TP 1), the
  engine's CUDA-graph kernel, log-linear in the message size;
* ``gen``: decode attention of one layer as ``max(floor, a + b * kv_tokens + c * batch)`` ms
  (least squares over the measured batch x context grid at the model's per-GPU head layout);
  ``gen_fp8_kv`` the same with an FP8 KV cache, where the database times it;
* ``ctx``: prefill attention of one layer as ``a + b * pairs`` ms, pairs = query-key pairs.

Run it with the package installed (``make perop-data`` builds a throwaway venv)::

    python -m tools.perop --out sim/data/silicon/perop
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

AICONFIGURATOR_VERSION = "0.12.0"
#: capsim GPU name -> aiconfigurator system folder.
SYSTEMS = {
    "h100-sxm": "h100_sxm",
    "h200": "h200_sxm",
    "b200": "b200_sxm",
    "gb200": "gb200",
    "b300": "b300_sxm",
    "gb300": "gb300",
    "a100-80gb": "a100_sxm",
    "l40s": "l40s",
    "h100-pcie": "h100_pcie",
    "l4": "l4",
}
ENGINES = ("vllm", "trtllm", "sglang")
#: capsim weight dtype -> the GEMM table's dtype and the kernels tried (fastest measured wins).
DTYPES = {"bf16": ("bfloat16", "float16"), "fp8": ("fp8",), "fp4": ("nvfp4",)}
TPS = (1, 2, 4, 8)
#: The token counts kept from the GEMM tables' grid (a GEMM's time is close to linear between them).
M_KNOTS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384)


def _data_root() -> Path:
    import aiconfigurator_core

    return Path(aiconfigurator_core.__file__).parent / "systems" / "data"


def _version_dir(root: Path, system: str, op: str, engine: str, file: str = "*.parquet") -> Path | None:
    """The newest measured version of ``engine``'s ``op`` tables on ``system`` that has ``file``."""
    base = root / system / op / engine
    if not base.is_dir():
        return None
    from packaging.version import Version

    vs = sorted((d for d in base.iterdir() if d.is_dir() and any(d.glob(file))), key=lambda d: Version(d.name))
    return vs[-1] if vs else None


class Gemm:
    """Latency (ms) of an (m, n, k) GEMM from one engine's table: exact at measured points, bilinear
    in (n, k) at a measured ``m``, linear in ``m`` between measured ``m``; the fastest kernel."""

    def __init__(self, path: Path, dtypes: tuple[str, ...]):
        import pandas as pd

        d = pd.read_parquet(path, columns=["gemm_dtype", "m", "n", "k", "latency"])
        d = d[d.gemm_dtype.isin(dtypes)]
        if d.empty:
            raise LookupError(f"{path}: no {dtypes} rows")
        d = d.groupby(["m", "n", "k"]).latency.min().reset_index()
        self.ms = np.sort(d.m.unique()).astype(float)
        self.grids: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for m, g in d.groupby("m"):
            t = g.pivot(index="n", columns="k", values="latency").sort_index().sort_index(axis=1)
            t = t.interpolate(axis=0, limit_direction="both").interpolate(axis=1, limit_direction="both")
            self.grids[float(m)] = (t.index.to_numpy(float), t.columns.to_numpy(float), t.to_numpy(float))

    def _at(self, m: float, n: float, k: float) -> float:
        ns, ks, v = self.grids[m]
        return float(_bilinear(ns, ks, v, n, k))

    def __call__(self, m: float, n: float, k: float) -> float:
        ms = self.ms
        if m >= ms[-1]:
            return self._at(ms[-1], n, k) * m / ms[-1]
        if m <= ms[0]:
            return self._at(ms[0], n, k)
        i = int(np.searchsorted(ms, m))
        if ms[i] == m:
            return self._at(m, n, k)
        lo, hi = ms[i - 1], ms[i]
        w = (m - lo) / (hi - lo)
        return (1 - w) * self._at(lo, n, k) + w * self._at(hi, n, k)


def _bilinear(xs: np.ndarray, ys: np.ndarray, v: np.ndarray, x: float, y: float) -> float:
    """Bilinear interpolation on a grid; beyond its edge, proportional to the coordinate (a GEMM's
    time grows with n and k once it is large)."""
    sx = x / xs[-1] if x > xs[-1] else 1.0
    sy = y / ys[-1] if y > ys[-1] else 1.0
    x, y = min(max(x, xs[0]), xs[-1]), min(max(y, ys[0]), ys[-1])
    i = min(max(int(np.searchsorted(xs, x)) - 1, 0), len(xs) - 2)
    j = min(max(int(np.searchsorted(ys, y)) - 1, 0), len(ys) - 2)
    tx = (x - xs[i]) / (xs[i + 1] - xs[i])
    ty = (y - ys[j]) / (ys[j + 1] - ys[j])
    top = (1 - ty) * v[i, j] + ty * v[i, j + 1]
    bot = (1 - ty) * v[i + 1, j] + ty * v[i + 1, j + 1]
    return float(((1 - tx) * top + tx * bot) * sx * sy)


@functools.cache
def _attention(path: str, kv: str = "bf16") -> Any:
    import pandas as pd

    d = pd.read_parquet(path)
    if "window_size" in d.columns:  # full attention, not a sliding window
        d = d[d.window_size == 0]
    if "kv_cache_dtype" in d.columns:
        d = d[d.kv_cache_dtype.isin(["fp8"] if kv == "fp8" else ["bfloat16", "float16"])]
    elif kv == "fp8":
        return d.iloc[0:0]
    return d


def _layout(d: Any, heads: int, kv: int, head_dim: int) -> tuple[Any, float]:
    """The rows of the measured head layout nearest ``(heads, kv, head_dim)`` and the factor that
    scales their latency to it (attention time is proportional to the heads it serves)."""
    same = d[d.head_dim == head_dim]
    exact = same[(same.num_heads == heads) & (same.num_key_value_heads == kv)]
    if not exact.empty:
        return exact, 1.0
    ratio = heads / kv
    cands = same.groupby(["num_heads", "num_key_value_heads"]).size().reset_index()
    cands["dist"] = (np.log(cands.num_heads / cands.num_key_value_heads) - np.log(ratio)).abs() * 10 + (
        np.log(cands.num_heads) - np.log(heads)
    ).abs()
    h, k = cands.sort_values(["dist", "num_heads"]).iloc[0][["num_heads", "num_key_value_heads"]]
    return same[(same.num_heads == h) & (same.num_key_value_heads == k)], heads / float(h)


def gen_law(path: Path, heads: int, kv: int, head_dim: int, kv_dtype: str = "bf16") -> list[float] | None:
    """[floor, a, b, c]: one layer's decode attention, ``max(floor, a + b * kv_tokens + c * batch)`` ms,
    with a BF16 or an FP8 KV cache (None where the latter was not timed)."""
    rows = _attention(str(path), kv_dtype)
    if rows.empty:
        return None
    d, f = _layout(rows, heads, kv, head_dim)
    d = d.groupby(["batch_size", "step"]).latency.min().reset_index()
    b = d.batch_size.to_numpy(float)
    tokens = b * d.step.to_numpy(float)
    y = d.latency.to_numpy(float) * f
    floor = float(np.percentile(y[tokens <= np.percentile(tokens, 10)], 50))
    big = y > 1.5 * floor  # the floor's plateau says nothing about the slope
    x = np.column_stack([np.ones(big.sum()), tokens[big], b[big]])
    coef = np.linalg.lstsq(x / y[big, None], np.ones(big.sum()), rcond=None)[0]  # relative error
    coef = np.maximum(coef, [-np.inf, 0.0, 0.0])
    return [round(floor, 6), *(float(f"{c:.6g}") for c in coef)]


def ctx_law(path: Path, heads: int, kv: int, head_dim: int) -> list[float]:
    """[a, b]: one layer's prefill attention, ``a + b * pairs`` ms (pairs = query-key pairs)."""
    d, f = _layout(_attention(str(path)), heads, kv, head_dim)
    d = d.groupby(["batch_size", "isl"]).latency.min().reset_index()
    n = d.isl.to_numpy(float)
    pairs = d.batch_size.to_numpy(float) * n * (n + 1) / 2
    y = d.latency.to_numpy(float) * f
    x = np.column_stack([np.ones(len(y)), pairs])
    coef = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)[0]
    return [float(f"{max(coef[0], 0.0):.6g}"), float(f"{max(coef[1], 0.0):.6g}")]


class AllReduce:
    def __init__(self, path: Path):
        import pandas as pd

        d = pd.read_parquet(path)
        d = d[d.allreduce_dtype == "bfloat16"].assign(num_gpus=lambda x: x.num_gpus.astype(int))
        graph = d.kernel_source.str.contains("graph")
        self.d = d[graph] if graph.any() else d  # the CUDA-graph kernel, as a decode step runs it

    def __call__(self, elements: float, gpus: int) -> float:
        if gpus == 1:
            return 0.0
        g = self.d[self.d.num_gpus == gpus].groupby("message_size").latency.min()
        if g.empty:
            raise LookupError(f"no all-reduce at {gpus} GPUs")
        x = np.log(g.index.to_numpy(float))
        return float(np.interp(np.log(elements), x, g.to_numpy(float)))


def catalog_models(moe: bool = False) -> dict[str, dict[str, Any]]:
    """The catalog's dense models (``moe``: its mixture-of-experts models)."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "sim/spec/catalog/models.yaml").read_text())
    return {k: v for k, v in doc.items() if isinstance(v, dict) and bool(v.get("experts")) == moe and "layers" in v}


def entry(gemm: Gemm, ar: AllReduce | None, gen: Path, ctx: Path, m: dict[str, Any], tp: int) -> dict[str, Any] | None:
    d, h, kv, hd, ff, v = m["hidden"], m["heads"], m["kv_heads"], m["head_dim"], m["intermediate"], m["vocab"]
    if h % tp or ff % tp:
        return None
    shapes = {
        "qkv": ((h + 2 * kv) * hd // tp, d),
        "o": (d, h * hd // tp),
        "gate_up": (2 * ff // tp, d),
        "down": (d, ff // tp),
        "lm_head": (-(-v // tp), d),
    }
    ms = [float(x) for x in M_KNOTS if x <= gemm.ms[-1]]
    out: dict[str, Any] = {"m": [int(x) for x in ms], "gemm": {}}
    for name, (n, k) in shapes.items():
        out["gemm"][name] = [float(f"{gemm(x, n, k):.6g}") for x in ms]
    if tp > 1:
        if ar is None:
            return None
        try:
            out["allreduce"] = [float(f"{ar(x * d, tp):.6g}") for x in ms]
        except LookupError:  # the engine's all-reduce was not timed at this many GPUs
            return None
    else:
        out["allreduce"] = [0.0] * len(ms)
    out["gen"] = gen_law(gen, h // tp, max(1, kv // tp), hd)
    fp8 = gen_law(gen, h // tp, max(1, kv // tp), hd, "fp8")
    if fp8 is not None:
        out["gen_fp8_kv"] = fp8
    out["ctx"] = ctx_law(ctx, h // tp, max(1, kv // tp), hd)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def extract(out: Path, gpus: list[str], say: Any = print) -> None:
    root = _data_root()
    models = catalog_models()
    out.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        system = SYSTEMS[gpu]
        doc: dict[str, Any] = {
            "kind": "capsim.perop_tables",
            "source": f"aiconfigurator {AICONFIGURATOR_VERSION} aiconfigurator_core/systems/data/{system} "
            "(NVIDIA, Apache-2.0): kernels timed in isolation, https://github.com/ai-dynamo/aiconfigurator",
            "gpu": gpu,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "engines": {},
        }
        for eng in ENGINES:
            gd = _version_dir(root, system, "gemm", eng)
            ad = _version_dir(root, system, "attention", eng)
            cd = _version_dir(root, system, "comm", eng, "custom_allreduce_perf.parquet")
            if gd is None or ad is None:
                continue
            gen, ctx = ad / "generation_attention_perf.parquet", ad / "context_attention_perf.parquet"
            arp = (cd / "custom_allreduce_perf.parquet") if cd is not None else None
            ar = AllReduce(arp) if arp is not None and arp.is_file() else None
            e: dict[str, Any] = {
                "versions": {"gemm": gd.name, "attention": ad.name, "allreduce": cd.name if ar else None},
                "files": {p.name: sha(p) for p in (gd / "gemm_perf.parquet", gen, ctx) if p.is_file()},
                "entries": {},
            }
            for dt, names in DTYPES.items():
                try:
                    gemm = Gemm(gd / "gemm_perf.parquet", names)
                except LookupError:
                    continue
                for name, m in sorted(models.items()):
                    for tp in TPS:
                        x = entry(gemm, ar, gen, ctx, m, tp)
                        if x is not None:
                            e["entries"][f"{name}|tp{tp}|{dt}"] = x
            doc["engines"][eng] = e
            say(f"{gpu} {eng}: {len(e['entries'])} entries (gemm {gd.name}, attention {ad.name})")
        if doc["engines"]:
            tmp = out / f".{gpu}.json.tmp"
            tmp.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
            os.replace(tmp, out / f"{gpu}.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("sim/data/silicon/perop"))
    ap.add_argument("--gpu", action="append", choices=sorted(SYSTEMS), help="default: every GPU with data")
    a = ap.parse_args(argv)
    extract(a.out, a.gpu or list(SYSTEMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
