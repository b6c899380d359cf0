"""Tests for the fuzzy-routing pieces (deterministic: fixed seeds; < 10 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.calibrate.edit_distance import (
    IMPLS,
    allowed_distance,
    nearest,
    numpy_table,
    rapidfuzz_distance,
    route,
    two_row,
)
from sim.calibrate.routing import DEFAULT_QUESTIONS, fit_law, outcome, run_routing_calibration
from sim.calibrate.utterances import (
    ORDER_PLACEHOLDER,
    Utterance,
    add_typos,
    load_questions,
    make_utterances,
    normalize,
)
from tests.helpers import invoke

HERE = Path(__file__).resolve().parent
QUESTIONS = load_questions(str(DEFAULT_QUESTIONS))
DISTS = [numpy_table, two_row, rapidfuzz_distance]


# --------------------------------------------------------------------------
# edit distance: exact values


@pytest.mark.parametrize("dist", DISTS, ids=lambda f: f.__name__)
def test_ship_slip(dist):
    assert dist("ship", "slip") == 1  # substitute h -> l


@pytest.mark.parametrize("dist", DISTS, ids=lambda f: f.__name__)
def test_damaged_vs_on_time_is_7_not_8(dist):
    # "order arrived " (14 chars) is shared; what is left is "damaged" vs
    # "on time", both 7 characters.  Column-by-column alignment:
    #     d a m a g e d
    #     o n _ t i m e
    #     S S S S S S S      -> 7 substitutions, 0 matches.
    # Lower bound: equal lengths, so any alignment with an insertion also has
    # a deletion; using the shared letters costs more, e.g. matching the 'm's
    # (damaged[2], "on time"[5]) needs "da" vs "on ti" (5) + "aged" vs "e" (3)
    # = 8, matching the 'e's needs "damag" vs "on tim" (6) + "d" vs "" (1) = 7.
    # So the distance is 7; the source article printed 8 (off by one).
    assert dist("order arrived damaged", "order arrived on time") == 7
    assert dist("damaged", "on time") == 7


@pytest.mark.parametrize("dist", DISTS, ids=lambda f: f.__name__)
def test_kitten_sitting(dist):
    assert dist("kitten", "sitting") == 3  # k->s, e->i, +g


@pytest.mark.parametrize("dist", DISTS, ids=lambda f: f.__name__)
def test_empty_strings(dist):
    assert dist("", "") == 0
    assert dist("abc", "") == 3
    assert dist("", "abcd") == 4
    assert dist("a", "a") == 0


def test_all_three_agree_on_random_strings():
    rng = np.random.default_rng(12345)
    alphabet = np.array(list("abcd "))
    for _ in range(300):
        a = "".join(rng.choice(alphabet, size=int(rng.integers(0, 13))))
        b = "".join(rng.choice(alphabet, size=int(rng.integers(0, 13))))
        d = rapidfuzz_distance(a, b)
        assert numpy_table(a, b) == d, (a, b)
        assert two_row(a, b) == d, (a, b)
        assert two_row(b, a) == d  # symmetric
        assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))


def test_agree_on_question_pairs():
    rng = np.random.default_rng(7)
    for _ in range(20):
        i, j = rng.integers(len(QUESTIONS), size=2)
        a, b = QUESTIONS[int(i)], QUESTIONS[int(j)]
        assert numpy_table(a, b) == two_row(a, b) == rapidfuzz_distance(a, b)


def test_rapidfuzz_cutoff_semantics():
    assert rapidfuzz_distance("kitten", "sitting", score_cutoff=3) == 3
    assert rapidfuzz_distance("kitten", "sitting", score_cutoff=2) == 3  # cutoff + 1 when above


# --------------------------------------------------------------------------
# canonical questions and normalisation


def test_canonical_file():
    assert len(QUESTIONS) >= 300
    assert len(set(QUESTIONS)) == len(QUESTIONS)
    for q in QUESTIONS:
        assert q == q.lower() and normalize(q) == q
        assert not any(ch.isdigit() for ch in q)


def test_normalize():
    assert normalize("Wher is my ORDR #48291??") == f"wher is my ordr {ORDER_PLACEHOLDER}"
    assert normalize("Wher is my ORDR #48291??", placeholder="") == "wher is my ordr"
    assert normalize("order no. 12345: refund, please!") == f"order {ORDER_PLACEHOLDER} refund please"
    assert normalize("order number: 123456 late") == f"order {ORDER_PLACEHOLDER} late"
    assert normalize("(order 48291)") == f"order {ORDER_PLACEHOLDER}"
    assert normalize("What's   up...") == "whats up"
    assert normalize("size 42 shoes") == "size 42 shoes"  # short numbers are not order numbers
    assert normalize("  ") == ""


# --------------------------------------------------------------------------
# utterance generation


def test_make_utterances_deterministic_and_labelled():
    qs = QUESTIONS[:50]
    a = make_utterances(qs, 200, np.random.default_rng(3))
    b = make_utterances(qs, 200, np.random.default_rng(3))
    assert a == b
    assert all(isinstance(u, Utterance) and -1 <= u.canonical < len(qs) for u in a)
    unmatched = sum(u.canonical == -1 for u in a)
    assert 5 <= unmatched <= 40  # 10% of 200
    with_number = [u for u in a if u.order_number]
    assert 30 <= len(with_number) <= 90  # 30% of 200
    for u in with_number:
        assert u.order_number in u.text
        assert ORDER_PLACEHOLDER in normalize(u.text)
        assert u.order_number not in normalize(u.text, placeholder="")


def test_clean_utterances_equal_questions():
    qs = QUESTIONS[:30]
    us = make_utterances(
        qs, 50, np.random.default_rng(1), typo_rate=0.0, order_number_share=0.0, noise_share=0.0, unmatched_share=0.0
    )
    assert all(u.text == qs[u.canonical] for u in us)


def test_noise_is_undone_by_normalize():
    qs = QUESTIONS[:30]
    us = make_utterances(
        qs, 100, np.random.default_rng(2), typo_rate=0.0, order_number_share=0.0, noise_share=1.0, unmatched_share=0.0
    )
    assert all(normalize(u.text) == qs[u.canonical] for u in us)


def test_add_typos_bounded():
    rng = np.random.default_rng(5)
    assert add_typos("where is my order", 0.0, rng) == ("where is my order", 0)
    for q in QUESTIONS[:100]:
        t, ops = add_typos(q, 0.1, rng)
        assert rapidfuzz_distance(q, t) <= 2 * ops  # a transposition costs 2


def test_weights():
    us = make_utterances(QUESTIONS[:5], 200, np.random.default_rng(0), unmatched_share=0.0, weights=[1, 0, 0, 0, 0])
    assert {u.canonical for u in us} == {0}


# --------------------------------------------------------------------------
# routing


def test_route_exact_and_typo():
    qs = QUESTIONS
    i = qs.index("where is my order")
    for impl in IMPLS:
        small = [*qs[:5], "where is my order"] if impl != "rapidfuzz" else qs
        k = small.index("where is my order")
        assert route("Wher is my ordr #48291??", small, impl) == (k, 2)
    assert route("where is my order", qs)[0] == i
    assert route("tell me a joke about cats", qs) == (-1, -1)
    assert route("wher is my ordr", qs, threshold=2) == (i, 2)  # absolute threshold
    assert route("wher is my ordr", qs, threshold=1) == (-1, -1)


def test_route_impls_agree():
    qs = QUESTIONS[:15]
    us = make_utterances(qs, 25, np.random.default_rng(11), typo_rate=0.08)
    for u in us:
        ref = route(u.text, qs, "rapidfuzz", 0.3)
        assert route(u.text, qs, "two_row", 0.3) == ref
        assert route(u.text, qs, "numpy_table", 0.3) == ref
        assert route(u.text, qs, "rapidfuzz_nocutoff", 0.3) == ref
        assert route(u.text, qs, "two_row", 4) == route(u.text, qs, "rapidfuzz", 4)
        assert route(u.text, qs, "rapidfuzz_nocutoff", 4) == route(u.text, qs, "rapidfuzz", 4)


def test_route_without_cutoff_by_hand():
    # "track my ordr" vs "track my order": 1 edit over 14 characters (0.071); vs "track my parcel": 5 over 15
    qs = ["track my parcel", "track my order"]
    for impl in ("rapidfuzz", "rapidfuzz_nocutoff", "two_row"):
        assert route("Track my ordr!", qs, impl, 0.1) == (1, 1)
        assert route("Track my ordr!", qs, impl, 0.05) == (-1, -1)  # 0.071 > 0.05: nothing accepted
        assert route("Track my ordr!", qs, impl, 1) == (1, 1)
        assert route("Track my ordr!", qs, impl, 0) == (-1, -1)


def test_route_accuracy_reasonable():
    qs = QUESTIONS
    us = make_utterances(qs, 400, np.random.default_rng(2024))
    routed = [route(u.text, qs, "rapidfuzz", 0.3)[0] for u in us]
    o = outcome(us, routed)
    assert o["correct"] >= 0.95
    assert o["wrong"] <= 0.02
    assert o["off_topic_rejected"] >= 0.9
    # nearest() agrees with route() at the threshold
    for u, r in zip(us[:50], routed[:50]):
        i, _d, s = nearest(u.text, qs)
        assert (i if s <= 0.3 else -1) == r


def test_threshold_validation():
    with pytest.raises(ValueError):
        route("x", QUESTIONS, "rapidfuzz", 1.5)
    with pytest.raises(ValueError):
        route("x", QUESTIONS, "rapidfuzz", -1)
    with pytest.raises(TypeError):
        route("x", QUESTIONS, "rapidfuzz", True)
    with pytest.raises(ValueError):
        route("x", QUESTIONS, "bogus", 0.3)
    assert allowed_distance(0.25, 20, 40) == 10.0
    assert allowed_distance(3, 20, 40) == 3.0
    assert route("x", [], "two_row") == (-1, -1)
    assert route("x", [], "rapidfuzz") == (-1, -1)
    assert route("x", [], "rapidfuzz_nocutoff") == (-1, -1)


# --------------------------------------------------------------------------
# calibration harness (structure only; timings are not asserted)


def test_fit_law():
    f = fit_law([1, 2, 3], [3, 5, 7])
    assert f["a"] == pytest.approx(1) and f["b"] == pytest.approx(2) and f["r2"] == pytest.approx(1)


def test_calibration_smoke(tmp_path):
    d = run_routing_calibration(
        sizes=(10, 20),
        n_utterances=20,
        slow_max_questions=5,
        slow_utterances=6,
        rapidfuzz_passes=1,
        scaling_check_size=20,
        scaling_check_utterances={"two_row": 2, "numpy_table": 1},
        typo_sweep=(0.03,),
        typo_sweep_utterances=20,
        cache_utterances=50,
        cache_questions=10,
        noise_probe_repeats=2,
    )
    json.dumps(d, allow_nan=False)
    assert {r["impl"] for r in d["records"]} == set(IMPLS)
    assert len(d["records"]) == 8 and len(d["fits"]) == 4
    for r in d["records"]:
        assert r["p50"] <= r["p90"] <= r["p95"] <= r["p99"]
        assert len(r["values_ms"]) == len(d["probs"])
        if r["impl"] in ("two_row", "numpy_table"):
            assert r["timed_questions"] == 5 and r["agreement_with_rapidfuzz"] == 1.0
        if r["impl"] == "rapidfuzz_nocutoff":  # timed on the whole set, same answers as with the cutoff
            assert r["timed_questions"] == r["questions"] and r["agreement_with_rapidfuzz"] == 1.0
    assert {c["impl"] for c in d["scaling_check"]} == {"two_row", "numpy_table"}
    assert [a["questions"] for a in d["routing_accuracy"]] == [10, 20]
    assert d["cache_keys"]["routed"]["distinct_keys"] <= d["cache_keys"]["raw_text"]["distinct_keys"]
    assert d["machine"]["versions"]["rapidfuzz"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sizes", "1000"], "error: --sizes: 1000 is more than the 436 canonical questions there are (1..436)"),
        (["--sizes", "0"], "error: --sizes: '0' is not a positive integer"),
        (
            ["--impls", "bogus"],
            "error: --impls: 'bogus' is not one of rapidfuzz, rapidfuzz_nocutoff, two_row, numpy_table",
        ),
    ],
)
def test_calibrate_routing_bad_input_is_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "r.json"
    res = invoke("calibrate", "routing", "--out", out, *args)
    assert res.exit_code == 2 and res.stderr.strip() == message
    assert not out.exists()
