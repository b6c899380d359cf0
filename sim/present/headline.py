"""The answer of a sweep in words: the headline sentences and the notes under them.

:func:`headline` reads the SLA verdicts per swept key ("At users=1,000: no
configuration passes: ...; index=hnsw: passes up to users=500 (fails at
users=1,000)"); :func:`report_notes` gives the terminal's notes (unstable points,
warm-up, where search times came from, prices, precision, over-time summaries) as
``(kind, text)`` pairs.  The HTML report and notebooks print both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.analysis.stats import combine_verdicts
from sim.present.labels import and_list, point_label, short, value_text
from sim.present.tables import timeline_line

Point = Mapping[str, Any]


def point_verdict(point: Point) -> str | None:
    """``fail`` if any SLA fails, ``inconclusive`` if any is and none fails, ``pass``, or None (no SLA)."""
    verdict = combine_verdicts([v["verdict"] for v in point.get("sla", [])])
    return None if verdict == "none" else verdict


def is_stable(point: Point) -> bool:
    """Whether the point reached a steady state (a point without a stability check counts as stable)."""
    return bool((point.get("stability") or {}).get("stable", True))


def passes(point: Point) -> bool:
    """Its SLA verdict is pass and it reached a steady state."""
    return point_verdict(point) == "pass" and is_stable(point)


def stability_text(point: Point) -> str:
    """``stable``, or ``unstable (why)``: the overloaded stage, or a latency still rising."""
    st = point.get("stability") or {}
    if st.get("stable", True):
        return "stable"
    if st.get("kind") == "not_steady":
        return "unstable (latency still rising)"
    why = (st.get("note") or "").split(": queues grow")[0]
    return f"unstable ({why})" if why else "unstable"


def headline(points: Sequence[Point], key: str | None) -> list[str]:
    """The answer in sentences, from the verdicts per swept key.

    With a load key (``key``, numeric): one sentence for its largest value and one for the
    largest value at which something passes ("At users=1,000: no point passes; at
    users=50: pass with index=hnsw and index=linear_numpy, index=linear_python fails"),
    then, per combination of the other swept keys, the largest ``key`` that passes.
    Without one: which points pass, fail or are inconclusive."""
    if not points:
        return []
    if all(point_verdict(p) is None for p in points):
        return _without_sla(points)
    if key is None or not all(key in p.get("params", {}) for p in points):
        return _by_verdict(points)
    return _at_values(points, key) + [_combination_line(ps, key, combo) for combo, ps in _combinations(points, key)]


def _without_sla(points: Sequence[Point]) -> list[str]:
    bad = [point_label(p.get("params", {})) for p in points if not is_stable(p)]
    return ["No SLA is set, so there are no verdicts."] + (
        [f"No steady state at {and_list(bad)}: the system cannot keep up there."] if bad else []
    )


def _word(p: Point) -> str:
    """The point's verdict as a word: ``pass``, ``fail (unstable)``, ``no SLA``..."""
    return (point_verdict(p) or "no SLA") + ("" if is_stable(p) else " (unstable)")


def _by_verdict(points: Sequence[Point]) -> list[str]:
    """``pass: users=10 and users=20``, one line per verdict word, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for p in points:
        groups.setdefault(_word(p), []).append(point_label(p.get("params", {})))
    return [f"{w}: {and_list(labs)}" for w, labs in groups.items()]


def _others(p: Point, key: str) -> str:
    """The point's label without ``key`` ("" when ``key`` is its only swept key)."""
    return point_label({k: v for k, v in p["params"].items() if k != key}) if len(p["params"]) > 1 else ""


def _brief(p: Point, key: str) -> str:
    """:func:`_others`, or the bare value where the one other key is a name (``hnsw``)."""
    rest = [v for k, v in p["params"].items() if k != key]
    return rest[0] if len(rest) == 1 and isinstance(rest[0], str) else _others(p, key)


def _verb(word: str, n: int) -> str:
    """``fails``/``fail`` for n points failing (with why when unstable), else ``is``/``are`` + the word."""
    if word.startswith("fail"):
        return ("fail" if n > 1 else "fails") + (" (no steady state)" if "unstable" in word else "")
    return ("are " if n > 1 else "is ") + word


def _at_values(points: Sequence[Point], key: str) -> list[str]:
    """With other swept keys: the sentence at the largest ``key``, and the one at the largest
    ``key`` where something passes (if that differs).  With ``key`` alone, none: the line per
    combination says it all."""
    if not any(len(p["params"]) > 1 for p in points):
        return []
    values = sorted({p["params"][key] for p in points})
    lines = [_at(points, key, values[-1])]
    ok = [v for v in values if any(p["params"][key] == v and passes(p) for p in points)]
    if ok and ok[-1] != values[-1]:
        lines.append(_at(points, key, ok[-1]))
    return lines


def _at(points: Sequence[Point], key: str, value: Any) -> str:
    """``At users=500: pass with linear_numpy and hnsw; linear_python fails (no steady state)``."""
    here = [p for p in points if p["params"][key] == value]
    passing = [_brief(p, key) for p in here if passes(p)]
    head = f"At {short(key)}={value_text(value)}: "
    if len(here) == 1:
        return head + ("pass" if passing else _verb(_word(here[0]), 1).removeprefix("is "))
    by: dict[str, list[str]] = {}
    for p in here:
        if not passes(p):
            by.setdefault(_word(p), []).append(_brief(p, key))
    tail = "; ".join(f"{and_list(labs)} {_verb(w, len(labs))}" for w, labs in by.items())
    if not passing:
        return head + "no configuration passes: " + tail
    return head + "pass with " + and_list(passing) + (f"; {tail}" if tail else "")


def _combinations(points: Sequence[Point], key: str) -> list[tuple[str, list[Point]]]:
    """The points grouped by their other swept keys, each group sorted by ``key``."""
    combos: dict[str, list[Point]] = {}
    for p in points:
        combos.setdefault(_others(p, key), []).append(p)
    return [(combo, sorted(ps, key=lambda p: p["params"][key])) for combo, ps in combos.items()]


def _combination_line(ps: Sequence[Point], key: str, combo: str) -> str:
    """``index=hnsw: passes up to users=500 (fails at users=1,000)``; capitalised without a combination."""
    name = short(key)
    good = [p["params"][key] for p in ps if passes(p)]
    bad = [p["params"][key] for p in ps if not passes(p)]
    if good and bad and min(good) > max(bad):
        # more of the key helps (replicas, workers): the answer is the fewest that passes
        text = f"passes from {name}={value_text(good[0])} up"
    elif good:
        text = f"passes up to {name}={value_text(good[-1])}"
    else:
        text = f"passes at none of the swept {name} values"
    text += _misses(ps, key)
    return f"{combo}: {text}" if combo else text[0].upper() + text[1:]


def _misses(ps: Sequence[Point], key: str) -> str:
    """`` (fails at users=1,000; no steady state at users=2,000)``, or "" when every point passes."""
    by: dict[str, list[str]] = {}
    for p in ps:
        if not passes(p):
            w = _word(p)
            w = "no steady state" if "unstable" in w else "fails" if w == "fail" else w
            by.setdefault(w, []).append(value_text(p["params"][key]))
    if not by:
        return ""
    return " (" + "; ".join(f"{w} at {short(key)}={', '.join(vs)}" for w, vs in by.items()) + ")"


def report_notes(points: Sequence[Point]) -> list[tuple[str, str]]:
    """The terminal's notes (``sim.present.tables.print_run``) as ``(kind, text)`` pairs:
    unstable points, warm-up, where search times and recall came from, precision and
    inconclusive or failing-window hints, the over-time summary."""
    out: list[tuple[str, str]] = []
    if any(not is_stable(p) for p in points):
        out.append(
            (
                "unstable",
                "no steady state at some points: their percentiles grow with the run length; they are not "
                "what the system would show if left running",
            )
        )
    out += _source_note(points) + _price_note(points) + _fixed_warmup_note(points)
    for p in points:
        out += _point_notes(p)
    return out


def _source_note(points: Sequence[Point]) -> list[tuple[str, str]]:
    """Where the search times (and recall@k) came from, when every point says the same."""
    rets = [p.get("retrieval") or {} for p in points]
    if any(r.get("recall_at_k") is not None for r in rets):
        src = next(r["source"] for r in rets if r.get("recall_at_k") is not None)
        scaled = any(r.get("extrapolated") for r in rets)
        return [
            (
                "source",
                f"search times and recall@k measured in {Path(src).name}"
                + ("; some scaled beyond the measured corpus sizes by the fitted law" if scaled else ""),
            )
        ]
    if rets and all(r.get("source") for r in rets) and len({r["source"] for r in rets}) == 1:
        return [("source", f"search times from {rets[0]['source']}")]
    return []


def _price_note(points: Sequence[Point]) -> list[tuple[str, str]]:
    """The dates the catalog's prices were read on, when a point has a cost."""
    dates = sorted({str(d) for p in points if (d := (p.get("cost") or {}).get("price_date"))})
    if not dates:
        return []
    return [
        (
            "prices",
            f"costs at the price catalog's on-demand prices read on {', '.join(dates)} "
            "(sim/spec/catalog/prices.yaml); a cost: section sets your own",
        )
    ]


def _fixed_warmup_note(points: Sequence[Point]) -> list[tuple[str, str]]:
    """One note for a fixed warm-up cut every point shares."""
    warm = [p.get("warmup") for p in points]
    if not (warm and all(w and w["method"] == "fixed" and w["cut_s"] > 0 for w in warm)):
        return []
    w0 = warm[0]
    assert w0 is not None  # all() above
    return [
        (
            "warm-up",
            f"requests that arrived before {w0['cut_s']:g} s dropped (run.warmup_s; "
            f"{w0['dropped_fraction']:.0%} of the requests)",
        )
    ]


def _point_notes(p: Point) -> list[tuple[str, str]]:
    """One point's notes: its MSER-5 cut, stability, precision, over-time line and SLA hints."""
    where = point_label(p.get("params", {})) if p.get("params") else "the scenario"
    out: list[tuple[str, str]] = []
    w = p.get("warmup")
    if w and w["method"] == "mser5":
        out.append(
            (
                "warm-up",
                f"at {where}: MSER-5 cut {w['cut_s']:.1f} s, {w['dropped_fraction']:.0%} of the requests dropped",
            )
        )
    st = p.get("stability") or {}
    if not st.get("stable", True):
        out.append(("unstable", f"at {where}: {st.get('note') or 'no steady state'}"))
    elif st.get("note"):
        out.append(("note", f"at {where}: {st['note']}"))
    prec = p.get("precision")
    if prec and prec.get("note"):
        out.append(("precision", f"at {where}: {prec['note']}"))
    if p.get("timeline"):
        out.append(("over time", f"at {where}: {timeline_line(p['timeline'])}"))
    for v in p.get("sla", []):
        if v.get("hint") and (
            v["verdict"] == "inconclusive" or (v["verdict"] == "fail" and v.get("window_s") is not None)
        ):
            out.append((v["verdict"], f"{v['metric']} {v['stat']} at {where}: {v['hint']}"))
    return out
