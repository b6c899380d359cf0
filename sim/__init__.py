"""capsim: a capacity simulator for retrieval-augmented LLM services.

Public API::

    import sim
    scn = sim.load_scenario("scenarios/order_support.yaml")
    res = sim.simulate(scn, {"workload.users": 200}, keep_records=True)
    res.summary          # the JSON document `capsim run --json` prints
    res.records          # one row per request, a pandas DataFrame (kept when asked)
"""

import importlib
from typing import TYPE_CHECKING, Any

from sim.version import __version__

__all__ = [
    "CapsimError",
    "ConfigError",
    "PointResult",
    "Result",
    "Scenario",
    "__version__",
    "load_scenario",
    "simulate",
]

# Loaded on first use, so `capsim --help` does not import pandas, pydantic and scipy.
_LAZY = {
    "Scenario": "sim.spec.schema",
    "CapsimError": "sim.errors",
    "ConfigError": "sim.errors",
    "PointResult": "sim.run.results",
    "Result": "sim.run.results",
    "simulate": "sim.run.sweep",
    "load_scenario": "sim.spec.scenario",
}

if TYPE_CHECKING:
    from sim.errors import CapsimError, ConfigError
    from sim.run.results import PointResult, Result
    from sim.run.sweep import simulate
    from sim.spec.scenario import load_scenario
    from sim.spec.schema import Scenario


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
