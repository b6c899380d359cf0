"""Retrieval index kinds: one module per kind, registered in :data:`sim.registry.INDEXES`.

A kind (:class:`sim.indexes.base.IndexKind`) says what its knob is (``ef``
for HNSW, ``nprobe`` for IVF, none for exact scans), its scaling law
``time = a + b*x(N)``, and how to build it and time single searches on a
corpus (``measure``, called by the calibration harness with a
:class:`~sim.indexes.base.Bench`).  The simulator only reads knobs and laws;
the heavy libraries (hnswlib, faiss) are imported inside ``measure``.

Adding an index: see "How to add an index" in the README.
"""

from __future__ import annotations

from sim.indexes.base import Bench, IndexKind, kind, kinds

__all__ = ["Bench", "IndexKind", "kind", "kinds"]
