"""capsim: a capacity simulator for retrieval-augmented LLM services.

Public API::

    import sim
    scn = sim.load_scenario("scenarios/order_support.yaml")
    res = sim.simulate(scn, {"workload.users": 200})
    res.summary          # the JSON document `capsim run --json` prints
    res.records          # one row per request, a pandas DataFrame
"""

from .config import Scenario
from .errors import CapsimError, ConfigError
from .runner import PointResult, Result, simulate
from .scenario import load_scenario

__all__ = ["CapsimError", "ConfigError", "PointResult", "Result", "Scenario", "load_scenario", "simulate"]
__version__ = "0.1.0"
