"""What keeps a large shop's cost per request flat changes no number: think timers waiting in
a calendar (:func:`think_calendar`), the garbage collector quiet while the model runs
(:func:`long_lived_model`), which leaves the collector as it found it."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import sim
import sim.engine.pipeline as pipeline
from sim.engine.pipeline import GC_YOUNG_THRESHOLD, Model, long_lived_model

SMALL = Path(__file__).parent / "data" / "rag_small.yaml"


def test_the_model_is_built_with_the_collector_off_and_runs_frozen() -> None:
    before = gc.get_threshold()
    with long_lived_model() as built:
        assert not gc.isenabled()
        kept = [object() for _ in range(10)]  # something the model builds
        built()
        assert gc.isenabled() and gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    assert gc.isenabled() and gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_run_restores_the_collector_and_leaves_frozen_objects_frozen() -> None:
    scn = sim.load_scenario(SMALL, {"run.duration_s": 30, "run.warmup_s": 5})
    before = gc.get_threshold()
    Model(scn, 0).run()
    assert gc.isenabled() and gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.freeze()  # a process that froze its own objects (before forking workers, say)
    try:
        n = gc.get_freeze_count()
        Model(scn, 0).run()
        # Neither released (0) nor added to; a frozen object freed by reference count leaves it.
        assert n - 100 < gc.get_freeze_count() <= n
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled() -> None:
    scn = sim.load_scenario(SMALL, {"run.duration_s": 30, "run.warmup_s": 5})
    gc.disable()
    try:
        Model(scn, 0).run()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_think_timers_through_a_calendar_give_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    scn = sim.load_scenario(SMALL, {"run.duration_s": 60, "run.warmup_s": 5})
    plain = Model(scn, 0, records=True)
    a = plain.run().records
    assert plain.calendar is None  # 40 shoppers: their timers go straight on the queue
    monkeypatch.setattr(pipeline, "CALENDAR_TIMERS", 4)  # buckets of 2 s x 4 / 40 = 0.2 s
    cal = Model(scn, 0, records=True)
    b = cal.run().records
    assert cal.calendar is not None and cal.calendar.width == pytest.approx(0.2)
    assert len(a["e2e_ms"]) > 1000
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_parked_streams_draw_what_their_own_generators_draw() -> None:
    """Two parked streams on one scratch generator, their calls interleaved, draw exactly what
    :func:`stream`'s generators for the same arguments draw, whatever the method."""
    from sim.rng import parked, stream

    scratch = np.random.Generator(np.random.PCG64(0))
    own = [stream(5, 1, "tokens", u) for u in (3, 4)]
    park = [parked(scratch, 5, 1, "tokens", u) for u in (3, 4)]
    for step in range(30):
        for g, p in zip(own, park):
            if step % 3 == 0:
                assert np.array_equal(g.random(7), p.random(7))
            elif step % 3 == 1:
                assert np.array_equal(g.lognormal(1.0, 0.5, size=5), p.lognormal(1.0, 0.5, size=5))
            else:  # 32-bit draws leave half a word in the state (has_uint32): it must carry over
                assert np.array_equal(g.random(3, dtype=np.float32), p.random(3, dtype=np.float32))


@pytest.mark.parametrize("seed", [0, 1, 48291, 2**32 - 1, 2**32, 2**64 + 5, 2**130 + 17])
def test_shoppers_streams_seeded_together_start_where_numpy_starts_them(seed: int) -> None:
    """``pcg64_states`` (numpy's SeedSequence and PCG64 seeding, over many sub-streams at once)
    gives every sub-stream the state numpy's own classes give it, and ``parked_many`` the
    streams ``parked`` gives one by one: the same draws."""
    from sim.rng import _compact, parked, parked_many, pcg64_states, spawn_key

    subs = [0, 1, 2, 4095, 4096, 99_999, 2**31, 2**32 - 1]
    for rep, purpose in ((0, "user"), (7, "output_tokens")):
        got = pcg64_states(seed, spawn_key(rep, purpose), subs)
        for sub, state in zip(subs, got):
            ss = np.random.SeedSequence(seed, spawn_key=spawn_key(rep, purpose, sub))
            assert state == _compact(np.random.PCG64(ss).state), (seed, rep, purpose, sub)
    scratch = np.random.Generator(np.random.PCG64(0))
    together = parked_many(scratch, seed, 3, "tokens", subs)
    alone = [parked(scratch, seed, 3, "tokens", s) for s in subs]
    for a, b in zip(together, alone):
        assert np.array_equal(a.lognormal(1.0, 0.5, size=9), b.lognormal(1.0, 0.5, size=9))
    with pytest.raises(ValueError, match="2\\*\\*32"):
        pcg64_states(seed, spawn_key(0, "user"), [2**32])
