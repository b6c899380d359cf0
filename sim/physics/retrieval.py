"""Retrieval latency profiles for the simulator, read from a calibration file.

Picture: the calibration file holds, for each measured (index, knob, corpus
size N, threads), the latency quantiles at probabilities 0, 0.01, ..., 1.
The simulator asks for "hnsw, 1,000,000 docs, dim 768, top 5, ef 64, 2
workers" and gets a :class:`RetrievalProfile` -- quantiles it can sample
from with :func:`sample_quantiles` -- built by these rules:

1. index, dim and top_k must be in the file exactly (no silent rescaling),
   except that a file measured on the user's own vectors (one dimension) sets
   the dimension: it is a property of those embeddings, not a knob;
2. ``workers`` picks the record with that many concurrent workers, or the
   largest measured count below it (said in ``description``);
3. a knob (``ef_search`` for hnsw, ``nprobe`` for ivf) that was measured is
   used as is; one between two measured values is interpolated linearly
   (quantiles, mean and recall; ``interpolated=True``); outside -> error;
4. a measured N is used as is; any other N comes from the fitted scaling law
   of that series (``extrapolated=True`` when N is outside the measured
   range).  Recall at an unmeasured N is interpolated in ln N between the
   measured sizes, or taken from the nearest measured size outside them.

Anything the file cannot cover raises :class:`~sim.errors.CalibrationError`
with one line listing what the file has and the command that would measure it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import CalibrationError
from sim.files import data_path, regular_file_problem
from sim.indexes import kind, kinds
from sim.indexes.base import auto_nlist

VERSION = 1
KIND = "capsim.retrieval_calibration"


@dataclass(frozen=True)
class RetrievalProfile:
    """Latency distribution of one retrieval call, as quantiles in milliseconds.

    ``probs`` ascend from 0 to 1 and ``values_ms`` are non-decreasing, so
    ``sample_quantiles(probs, values_ms, rng, n)`` draws from it.
    """

    probs: tuple[float, ...]
    values_ms: tuple[float, ...]
    mean_ms: float
    recall: float | None
    extrapolated: bool
    interpolated: bool
    description: str


def sample_quantiles(
    probs: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
    size: int | tuple[int, ...],
) -> np.ndarray:
    """Inverse-CDF sampling: ``u ~ U(0, 1)``, return ``np.interp(u, probs, values)``.

    The distribution is piecewise uniform between stored quantiles, so its
    quantiles at ``probs`` equal ``values`` exactly.
    """
    p = np.asarray(probs, dtype=float)
    v = np.asarray(values, dtype=float)
    if p.ndim != 1 or p.shape != v.shape or p.size < 2:
        raise ValueError("probs and values must be 1-D of the same length >= 2")
    if p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0):
        raise ValueError("probs must rise strictly from 0 to 1")
    if np.any(np.diff(v) < 0):
        raise ValueError("values must be non-decreasing")
    drawn: np.ndarray = np.interp(rng.random(size), p, v)
    return drawn


@dataclass(frozen=True, eq=False)
class _Rec:
    index: str
    docs: int
    dim: int
    top_k: int
    knob_value: int | None
    threads: int
    mean_ms: float
    values_ms: np.ndarray
    recall: float | None
    nlist: int | None


@dataclass(frozen=True, eq=False)
class _Fit:
    index: str
    knob_value: int | None
    threads: int
    docs: tuple[int, ...]
    mean_a: float
    mean_b: float
    a: np.ndarray
    b: np.ndarray


@dataclass(frozen=True, eq=False)
class Calibration:
    """A loaded, validated calibration file."""

    path: Path
    probs: tuple[float, ...]
    records: tuple[_Rec, ...] = field(repr=False)
    fits: tuple[_Fit, ...] = field(repr=False)
    settings: dict[str, Any] = field(repr=False, default_factory=dict)
    machine: dict[str, Any] = field(repr=False, default_factory=dict)
    corpus: dict[str, Any] = field(repr=False, default_factory=dict)

    # ---- what the file has
    @property
    def indexes(self) -> list[str]:
        return sorted({r.index for r in self.records})

    def _name(self) -> str:
        return self.path.name

    def _nlist_for(self, docs: int) -> int | None:
        nl = self.settings.get("nlist")
        if nl:
            return int(nl)
        by = self.settings.get("nlist_by_docs") or {}
        if str(docs) in by:
            return int(by[str(docs)])
        return auto_nlist(docs)

    def contention(self, index: str, **knobs: Any) -> tuple[float, ...]:
        """``(1, s2, ..., sK)``: how much slower each of ``m`` searches runs when ``m`` run at
        once (``knobs`` as for :meth:`profile`, without ``workers``); empty without a
        1-thread and a many-thread measurement.  See :mod:`sim.physics.sharing`."""
        return _contention(self, index, **knobs)

    def profile(
        self,
        index: str,
        docs: int,
        dim: int,
        top_k: int,
        ef_search: int | None = None,
        nprobe: int | None = None,
        workers: int = 1,
    ) -> RetrievalProfile:
        """The latency profile of one ``index`` query (see the module rules).

        ``ef_search`` is used only for hnsw, ``nprobe`` only for ivf.
        """
        notes: list[str] = []
        recs, dim, T = self._records_for(index, docs, dim, top_k, workers, notes)
        pairs, knob_txt = self._knob_weights(index, recs, ef_search, nprobe, notes)
        values, mean, recall, extrapolated = self._at_docs(index, recs, pairs, docs, T)
        if any(docs not in {r.docs for r in recs if r.knob_value == kv} for kv, _ in pairs):
            notes += _law_notes(kind(index).law_note, sorted({r.docs for r in recs}), docs, extrapolated)
        # keep the distribution valid: positive and non-decreasing
        floor = max(1e-6, float(np.min(values[values > 0])) if np.any(values > 0) else 1e-6)
        values = np.maximum.accumulate(np.maximum(values, floor))
        mean = float(min(max(mean, values[0]), values[-1]))
        desc = f"{index}{knob_txt} N={docs} dim={dim} top_k={top_k} threads={T} from {self._name()}" + (
            f" ({'; '.join(notes)})" if notes else " (measured)"
        )
        return RetrievalProfile(
            probs=tuple(float(p) for p in self.probs),
            values_ms=tuple(float(v) for v in values),
            mean_ms=mean,
            recall=None if recall is None else float(min(1.0, max(0.0, recall))),
            extrapolated=extrapolated,
            interpolated=len(pairs) > 1,
            description=desc,
        )

    def _records_for(
        self, index: str, docs: int, dim: int, top_k: int, workers: int, notes: list[str]
    ) -> tuple[list[_Rec], int, int]:
        """The records of ``index`` at this dim, top_k and the largest measured thread count
        <= ``workers``: (records, dim, threads).  Refuses what the file did not measure."""
        name = self._name()
        recs = [r for r in self.records if r.index == index]
        if not recs:
            raise CalibrationError(
                f"retrieval.index={index!r} is not in {name}; it has {', '.join(self.indexes)}; "
                f"measure it with: capsim calibrate retrieval --index {index}"
            )
        dims = sorted({r.dim for r in recs})
        if self.corpus.get("source") == "vectors" and len(dims) == 1 and dim not in dims:
            # Measured on the user's own embeddings: their dimension is a property of those
            # vectors, not a knob, so it carries into the scenario whatever retrieval.dim says.
            notes.append(f"dim {dims[0]} of the vectors measured (the scenario says {dim})")
            dim = dims[0]
        if dim not in dims:
            raise CalibrationError(
                f"retrieval.dim={dim} is not what {name} measured for {index} (dim {_join(dims)}); "
                f"measure it with: capsim calibrate retrieval --dim {dim}"
            )
        recs = [r for r in recs if r.dim == dim]
        ks = sorted({r.top_k for r in recs})
        if top_k not in ks:
            raise CalibrationError(
                f"retrieval.top_k={top_k} is not what {name} measured for {index} (top_k {_join(ks)}); "
                f"measure it with: capsim calibrate retrieval --top-k {top_k}"
            )
        recs = [r for r in recs if r.top_k == top_k]
        if not isinstance(docs, (int, np.integer)) or isinstance(docs, bool) or docs <= top_k:
            raise CalibrationError(f"retrieval.docs={docs!r} must be an integer larger than top_k={top_k}")
        if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
            raise CalibrationError(f"retrieval.workers={workers!r} must be a positive integer")
        ts = sorted({r.threads for r in recs})
        usable = [t for t in ts if t <= workers]
        if not usable:
            raise CalibrationError(
                f"retrieval workers={workers} is below what {name} measured for {index} (threads {_join(ts)}); "
                f"measure it with: capsim calibrate retrieval --threads {workers}"
            )
        T = max(usable)
        if workers != T:
            notes.append(f"{workers} workers: using the {T}-thread measurement (largest measured <= {workers})")
        return [r for r in recs if r.threads == T], dim, T

    def _knob_weights(
        self, index: str, recs: list[_Rec], ef_search: int | None, nprobe: int | None, notes: list[str]
    ) -> tuple[list[tuple[int | None, float]], str]:
        """(knob value, weight) pairs whose weighted profiles make the asked knob (one measured
        value, or the two around it), and the knob's text for the description."""
        ik = kind(index)
        if ik.knob is None:
            return [(None, 1.0)], ""
        name = self._name()
        want = {"retrieval.ef_search": ef_search, "retrieval.nprobe": nprobe}.get(ik.knob_key or "")
        have = sorted({r.knob_value for r in recs if r.knob_value is not None})
        label = "ef" if ik.knob == "ef" else "nprobe"
        if want is None:
            raise CalibrationError(f"{ik.knob_key} is required for {index}; {name} measured {label} {_join(have)}")
        if not isinstance(want, (int, np.integer)) or isinstance(want, bool) or want <= 0:
            raise CalibrationError(f"{ik.knob_key}={want!r} must be a positive integer")
        if want in have:
            return [(int(want), 1.0)], f" {label}={want}"
        if not (have and have[0] < want < have[-1]):
            raise CalibrationError(
                f"{ik.knob_key}={want} is outside what {name} measured for {index} "
                f"({label} {_join(have)}); measure it with: capsim calibrate retrieval {ik.knob_flag} {want}"
            )
        hi = next(v for v in have if v > want)
        lo = max(v for v in have if v < want)
        w = (want - lo) / (hi - lo)
        notes.append(f"{label} {want} interpolated between measured {lo} and {hi}")
        return [(lo, 1.0 - w), (hi, w)], f" {label}={want}"

    def _at_docs(
        self, index: str, recs: list[_Rec], pairs: list[tuple[int | None, float]], docs: int, T: int
    ) -> tuple[np.ndarray, float, float | None, bool]:
        """(quantile values, mean, recall, extrapolated) at ``docs``: measured, or from the
        scaling law, weighted over the knob ``pairs``."""
        extrapolated = False
        values = np.zeros(len(self.probs))
        mean = 0.0
        recall: float | None = 0.0
        for kv, w in pairs:
            series = sorted((r for r in recs if r.knob_value == kv), key=lambda r: r.docs)
            by_n = {r.docs: r for r in series}
            if docs in by_n:
                v, m = by_n[docs].values_ms, by_n[docs].mean_ms
            else:
                v, m, beyond = self._by_law(index, kv, T, docs, sorted(by_n))
                extrapolated = extrapolated or beyond
            values = values + w * np.asarray(v, dtype=float)
            mean += w * float(m)
            rc = _recall_at(series, docs)
            recall = None if (recall is None or rc is None) else recall + w * rc
        return values, mean, recall, extrapolated

    def _by_law(
        self, index: str, kv: int | None, T: int, docs: int, measured: list[int]
    ) -> tuple[np.ndarray, float, bool]:
        """(quantile values, mean, outside the fitted sizes) at ``docs`` from the scaling law."""
        name, ik = self._name(), kind(index)
        fit = next((f for f in self.fits if f.index == index and f.knob_value == kv and f.threads == T), None)
        if fit is None:
            raise CalibrationError(
                f"retrieval.docs={docs} is not measured in {name} for {index}{_kv(ik.knob, kv)} "
                f"threads={T} (docs {_join(measured)}) and there is no scaling law (needs >= 2 sizes); "
                f"measure it with: capsim calibrate retrieval --docs {docs}"
            )
        x = ik.law_x(docs, nlist=self._nlist_for(docs), nprobe=kv)
        v = fit.a + fit.b * x
        median = float(np.interp(0.5, self.probs, v))
        if median <= 0:  # the fitted law falls with N: extrapolated, it reaches a 0 ms search
            raise CalibrationError(
                f"retrieval.docs={docs}: the scaling law {ik.law_note} of {name} for {index}{_kv(ik.knob, kv)} "
                f"threads={T} gives a median of {median:.3g} ms there "
                f"(fitted mean slope {fit.mean_b:.3g}), not a search time; "
                f"measure it with: capsim calibrate retrieval --docs {docs}"
            )
        return v, fit.mean_a + fit.mean_b * x, docs < min(fit.docs) or docs > max(fit.docs)


def _law_notes(law: str, measured: list[int], docs: int, extrapolated: bool) -> list[str]:
    """What the description says when ``docs`` came from the scaling law."""
    if extrapolated:
        notes = [f"N={docs} extrapolated beyond measured N {_join(measured)} with the scaling law {law}"]
    else:
        notes = [f"N={docs} from the scaling law {law} fitted to measured N {_join(measured)}"]
    nearest = min(measured, key=lambda n: abs(math.log(n) - math.log(docs)))
    if docs < measured[0] or docs > measured[-1]:
        notes.append(f"recall taken from N={nearest} (nearest measured)")
    else:
        notes.append("recall interpolated in ln N")
    return notes


def _contention(cal: Calibration, index: str, **knobs: Any) -> tuple[float, ...]:
    """Slowdown of ``m`` searches at once over one alone, ``m = 1..K``, from the records at
    1..K threads (each thread a worker with its own index, all searching at once); a thread
    count between two measured ones interpolated; noise below 1 read as 1.  Empty when the
    file has no 1-thread record to compare with."""
    ts = sorted({r.threads for r in cal.records if r.index == index})
    if len(ts) < 2 or ts[0] != 1:
        return ()
    means = [cal.profile(index, workers=t, **knobs).mean_ms for t in ts]
    curve = np.interp(np.arange(1, ts[-1] + 1), ts, np.asarray(means) / means[0])
    return tuple(float(max(1.0, c)) for c in curve)


def _kv(knob: str | None, kv: int | None) -> str:
    return "" if knob is None else f" {knob}={kv}"


def _join(vals: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in vals) if vals else "none"


def _recall_at(series: list[_Rec], docs: int) -> float | None:
    pts = [(r.docs, r.recall) for r in series if r.recall is not None]
    if not pts:
        return None
    pts.sort()
    ns = [math.log(n) for n, _ in pts]
    return float(np.interp(math.log(docs), ns, [rc for _, rc in pts]))


def default_calibration_path() -> Path:
    """The calibration shipped with capsim: ``sim/data/retrieval_calibration.json``."""
    return data_path("retrieval_calibration.json")


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read and validate a calibration file (default: the shipped one).

    Anything wrong (missing, not JSON, wrong kind/version, bad structure) ->
    :class:`CalibrationError` with one line naming the file.
    """
    p = Path(path) if path is not None else default_calibration_path()
    try:  # the same file, unchanged since it was read: what was read then
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    held = _LOADED.get(key) if key is not None else None
    if held is not None:
        return held
    cal = _load_calibration(p)
    if key is not None:
        _LOADED.clear()  # one file at a time: a run reads one calibration, many times
        _LOADED[key] = cal
    return cal


#: The calibration last read, by (file, modification time, size).
_LOADED: dict[tuple[str, int, int], Calibration] = {}


def _load_calibration(p: Path) -> Calibration:
    name = p.name

    def bad(msg: str) -> CalibrationError:
        return CalibrationError(f"calibration file {name}: {msg}")

    doc = _read_json(p, bad)
    probs = _header_probs(doc, bad)
    raw = doc.get("records")
    if not isinstance(raw, list) or not raw:
        raise bad("records must be a non-empty list")
    recs = [_malformed_is_bad(_record, r, f"records[{i}]", probs, bad) for i, r in enumerate(raw)]
    fits = [_malformed_is_bad(_fit, f, f"fits[{i}]", probs, bad) for i, f in enumerate(doc.get("fits") or [])]
    return Calibration(
        path=p,
        probs=tuple(float(x) for x in probs),
        records=tuple(recs),
        fits=tuple(fits),
        settings=_section(doc, "settings"),
        machine=_section(doc, "machine"),
        corpus=_section(doc, "corpus"),
    )


_Bad = Callable[[str], CalibrationError]


def _read_json(p: Path, bad: _Bad) -> Any:
    problem = regular_file_problem(p)
    if problem is not None:
        raise bad(problem)
    try:
        text = p.read_text()
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError as exc:
        raise bad(f"is not UTF-8 text (byte {exc.start}); is it a binary file?") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise bad(f"duplicate key {exc.args[0]!r}; give each key once") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"is not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
    except RecursionError:
        raise bad("is nested too deeply to be a calibration") from None


def _header_probs(doc: Any, bad: _Bad) -> list[float]:
    """The kind, version and quantile probabilities every record's values follow."""
    if not isinstance(doc, dict):
        raise bad("top level must be a JSON object")
    if doc.get("kind") != KIND:
        raise bad(f"kind is {doc.get('kind')!r}; expected {KIND!r}")
    if doc.get("version") != VERSION:
        raise bad(f"version is {doc.get('version')!r}; this capsim reads version {VERSION}")
    probs = doc.get("probs")
    if (
        not isinstance(probs, list)
        or len(probs) < 2
        or not all(isinstance(x, (int, float)) for x in probs)
        or probs[0] != 0
        or probs[-1] != 1
        or any(b <= a for a, b in itertools.pairwise(probs))
    ):
        raise bad("probs must be a list of numbers rising strictly from 0 to 1")
    return probs


def _malformed_is_bad(read: Callable[..., Any], entry: Any, where: str, probs: list[float], bad: _Bad) -> Any:
    """``read(entry, where, probs, bad)``, a missing or mistyped field reported as one line."""
    try:
        return read(entry, where, probs, bad)
    except CalibrationError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"{where} is malformed ({type(exc).__name__}: {exc})") from None


def _record(r: Any, where: str, probs: list[float], bad: _Bad) -> _Rec:
    index = r["index"]
    if index not in kinds():
        raise bad(f"{where}.index {index!r} is not one of {', '.join(kinds())}")
    vals = np.asarray(r["values_ms"], dtype=float)
    if vals.shape != (len(probs),) or not np.isfinite(vals).all() or np.any(np.diff(vals) < 0) or vals[0] < 0:
        raise bad(f"{where}.values_ms must be {len(probs)} finite non-decreasing numbers >= 0")
    mean = float(r["mean_ms"])
    if not math.isfinite(mean) or mean < 0:
        raise bad(f"{where}.mean_ms must be a finite number >= 0")
    kv = r.get("knob_value")
    if (kind(index).knob is None) != (kv is None):
        raise bad(f"{where}.knob_value must be {'null' if kind(index).knob is None else 'an integer'} for {index}")
    if vals[-1] <= 0 or mean <= 0:
        raise bad(f"{where}: a search cannot take 0 ms; values_ms and mean_ms must be positive")
    rc = r.get("recall")
    if rc is not None and not (0.0 <= float(rc) <= 1.0):
        raise bad(f"{where}.recall must be between 0 and 1")
    params = r.get("params") or {}
    return _Rec(
        index=index,
        docs=_posint(r["docs"], where + ".docs", bad),
        dim=_posint(r["dim"], where + ".dim", bad),
        top_k=_posint(r["top_k"], where + ".top_k", bad),
        knob_value=None if kv is None else _posint(kv, where + ".knob_value", bad),
        threads=_posint(r["threads"], where + ".threads", bad),
        mean_ms=mean,
        values_ms=vals,
        recall=None if rc is None else float(rc),
        nlist=params.get("nlist"),
    )


def _fit(f: Any, where: str, probs: list[float], bad: _Bad) -> _Fit:
    a = np.asarray(f["a"], dtype=float)
    b = np.asarray(f["b"], dtype=float)
    if a.shape != (len(probs),) or b.shape != (len(probs),) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise bad(f"{where}.a and .b must be {len(probs)} finite numbers")
    if len(set(f["docs"])) < 2:
        raise bad(f"{where}.docs: a scaling law needs at least 2 distinct corpus sizes to be identified")
    return _Fit(
        index=str(f["index"]),
        knob_value=None if f.get("knob_value") is None else int(f["knob_value"]),
        threads=int(f["threads"]),
        docs=tuple(int(n) for n in f["docs"]),
        mean_a=float(f["mean"]["a"]),
        mean_b=float(f["mean"]["b"]),
        a=a,
        b=b,
    )


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` when it is a JSON object, else an empty one."""
    v = doc.get(key)
    return v if isinstance(v, dict) else {}


def _posint(v: Any, where: str, bad: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise bad(f"{where} must be a positive integer")
    return v
