"""On-demand prices of GPUs and CPU cores, each with the public page it was read on.

The catalog is ``sim/spec/catalog/prices.yaml``: USD per hour of one GPU (per
catalog GPU name) and of one CPU core (vCPU), with the figure as the page
printed it, the page's address and the date it was read.  A picture::

    >>> gpu_price("h100-sxm").usd_per_hour
    4.176
    >>> gpu_price("h100-sxm").read_on
    '2026-12-07'

A scenario's ``cost:`` section overrides any price (``cost.gpu_per_hour``,
``cost.cpu_core_per_hour``); :mod:`sim.analysis.dollars` resolves which one
applies and reports the date of every catalog price it used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.files import read_yaml_data
from sim.spec.quote import Quote, quote_fields

__all__ = ["Price", "cpu_core_price", "gpu_price", "priced_gpus"]

_FILE = Path(__file__).resolve().parent / "catalog" / "prices.yaml"

#: Hours per quoted unit: a per-second price times 3,600 is a per-hour price.
HOURS_PER_UNIT = {"second": 1 / 3600.0, "hour": 1.0}


@dataclass(frozen=True, kw_only=True)
class Price(Quote):
    """One catalog price: ``usd_per_hour`` of one GPU or one CPU core and where it was read."""

    usd_per_hour: float
    units_quoted: int
    offer: str

    @property
    def from_quote(self) -> float:
        """The hourly price the quoted figure gives: ``quoted / hours_per_unit / units_quoted``."""
        return self.quoted / HOURS_PER_UNIT[self.unit] / self.units_quoted


def _price(entry: dict[str, Any]) -> Price:
    return Price(
        usd_per_hour=float(entry["usd_per_hour"]),
        units_quoted=int(entry["units_quoted"]),
        offer=str(entry["offer"]),
        **quote_fields(entry),
    )


@functools.cache
def _load() -> tuple[dict[str, Price], Price]:
    data = read_yaml_data(_FILE)
    gpus = {str(k).lower(): _price(v) for k, v in data["gpus"].items()}
    return gpus, _price(data["cpu_core"])


def priced_gpus() -> list[str]:
    """Names of the catalog GPUs that have a price, sorted."""
    return sorted(_load()[0])


def gpu_price(name: str | None) -> Price | None:
    """The catalog price of one GPU (by catalog name, any case), or None when it has none."""
    if name is None:
        return None
    return _load()[0].get(name.strip().lower())


def cpu_core_price() -> Price:
    """The catalog price of one CPU core (vCPU) of a retrieval worker."""
    return _load()[1]
