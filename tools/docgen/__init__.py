"""Pages of the documentation site that are generated, never written by hand.

``gen_pages`` is the script mkdocs-gen-files runs during ``mkdocs build``; each
other module renders one page from the code or from committed result files:

* ``scenario_ref``: every scenario key, from the pydantic models' JSON Schema and
  ``sim/spec/descriptions.py``;
* ``validation``: the fidelity checks, from ``sim/data/published/fit.json``,
  ``docs/data/*.json`` (``make validation`` rewrites the ones it can measure here);
* ``performance``: ``make bench``'s figures, from ``benchmarks/results/*.json``.
"""
