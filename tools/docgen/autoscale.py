"""The autoscaling how-to page, ``docs/how-to/autoscale.md``, rendered from the committed
comparisons in ``docs/data/autoscale/``.

``make autoscale-data`` writes them (``capsim autoscale`` over the flash sale and the day) and
then the page (``python -m tools.docgen.autoscale``); a test holds the committed page to what
:func:`render` makes of the committed files, so the page cannot drift from them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sim.present.autoscale_tables import FLEET_HEADER, fleet_rows, markdown, window_header, window_rows
from sim.run.autoscale import Comparison, Fleet

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data" / "autoscale"
PAGE = ROOT / "docs" / "how-to" / "autoscale.md"
RUNS = {
    "flash_sale": "scenarios/flash_sale_autoscale.yaml",
    "diurnal": "scenarios/diurnal_autoscale.yaml --static 1,2",
}


def load(name: str) -> Comparison:
    """A committed comparison, read back into the object ``capsim autoscale`` printed."""
    d: dict[str, Any] = json.loads((DATA / name / "autoscale.json").read_text())
    fleet_keys = Fleet.__dataclass_fields__
    return Comparison(
        scenario=d["scenario"],
        window_s=d["window_s"],
        sla_window_s=d["sla_window_s"],
        autoscaled=Fleet(**{k: d["autoscaled"][k] for k in fleet_keys}),
        static=[Fleet(**{k: f[k] for k in fleet_keys}) for f in d["static"]],
        price_date=d["price_date"],
        sla_p95_ms=d.get("sla_p95_ms"),
    )


def _summary(c: Comparison) -> str:
    a, s = c.autoscaled, c.cheapest_static
    auto = a.autoscale or {}
    out = (
        f"The autoscaled fleet's verdict: **{a.verdict}**; it paid for {auto.get('replicas_paid', 0):.2f} "
        f"replicas on average ({a.gpu_hours:.3f} GPU-hours, ${a.cost_per_hour:,.2f} an hour), each new one "
        f"serving {auto.get('cold_start_s', 0):,.0f} s after it was decided."
    )
    if s is not None and c.saving_per_hour is not None:
        verb = "less" if c.saving_per_hour > 0 else "more"
        out += (
            f" The cheapest static fleet that passes is {s.label} ({s.gpu_hours:.3f} GPU-hours, "
            f"${s.cost_per_hour:,.2f} an hour): the autoscaler costs ${abs(c.saving_per_hour):,.2f} an hour {verb}."
        )
    wins = auto.get("windows", [])
    more = next((w for w in wins if w["paid"] > wins[0]["paid"]), None) if wins else None
    ready = next((w for w in wins if w["ready"] > wins[0]["ready"]), None) if wins else None
    if more is not None and ready is not None:
        out += (
            f" It first pays for more replicas than it started with in the {more['start_s']:,.0f}-"
            f"{more['end_s']:,.0f} s window; they first serve in the {ready['start_s']:,.0f}-"
            f"{ready['end_s']:,.0f} s window."
        )
    if c.price_date:
        out += f" Catalog prices read on {c.price_date}."
    return out


def section(name: str, title: str, windows: bool) -> str:
    c = load(name)
    parts = [
        f"## {title}",
        "",
        "```sh",
        f"capsim autoscale {RUNS[name]} --out docs/data/autoscale/{name}",
        "```",
        "",
        markdown(FLEET_HEADER, fleet_rows(c)),
        "",
        _summary(c),
        "",
        f"![P95 per window and replicas over time](../data/autoscale/{name}/autoscale.png)",
        "",
    ]
    if windows:
        parts += [markdown(window_header(c), window_rows(c)), ""]
    return "\n".join(parts)


INTRO = """# Autoscale replicas through the day

A static fleet is sized for the peak and paid for around the clock. An autoscaler adds
replicas when the load rises and removes them when it falls, but a new replica serves only
after its *cold start*: the model's weights read from storage, then the engine's start. If
the spike is shorter than that, the autoscaler pays for replicas that arrive too late.
`llm.autoscale` puts that autoscaler in the model, and `capsim autoscale` runs it beside
static fleets on the same shoppers.

```yaml
llm:
  replicas: 1                 # the fleet the run starts with
  autoscale:
    min_replicas: 1
    max_replicas: 3
    signal: queue             # queue | kv | utilization
    target: 8                 # per replica: waiting requests (kv, utilization: a share, 0-1)
    decision_interval_s: 15   # the Kubernetes HPA's default sync period
    tolerance: 0.1            # the HPA's default: no change within 10 % of the target
    cooldown_s: 300           # the HPA's default scale-down stabilisation window
    weights_from: ebs-gp3     # sim/spec/catalog/storage.yaml, or load_gbps: 2.0
    engine_start_s: 58        # the default (sim.spec.schema.ENGINE_START_S)
    max_starting: 1           # at most one replica starting at once (default: no limit)
```

**The rule** is the Kubernetes Horizontal Pod Autoscaler's. Every `decision_interval_s` the
signal is read off the ready replicas and summed (`total`); with `n` replicas provisioned
(starting or ready; one still starting counts as zero load, as the HPA counts pods not yet
ready when it scales up):

```
ratio     = total / (target x n)
recommend = n                      if |ratio - 1| <= tolerance
          = ceil(total / target)   otherwise, clamped to [min_replicas, max_replicas]
```

It scales up to the recommendation at once, and down only to the largest recommendation of
the last `cooldown_s`. The signals, per ready replica: `queue` the requests waiting for
admission (vLLM's `num_requests_waiting`), `kv` the share of its KV blocks in use,
`utilization` the share of its `max_batch` slots running; each is read at the decision.

**Cold start.** `cold_start_s = weights_bytes / load_bytes_per_s + engine_start_s`: the whole
model's weights (`llm.model`'s parameters x `llm.dtype_bytes`) read at the storage kind's
sequential rate (`weights_from`: an EBS gp3 volume at its default 125 MiB/s or its largest
2,000 MiB/s, a PCIe 4.0 or 5.0 NVMe drive at 7,000 or 13,000 MB/s, each with its page in the
catalog; `load_gbps` for your own measured figure), then `engine_start_s`: process start,
compilation, CUDA graph capture and the API server. Its default, 58 s, is a vLLM pod scaled up
with its compilation cache kept: weights loaded in 0.9 s and the first answer 59 s after the
start (https://github.com/vllm-project/vllm/issues/20264). Measure your own: it is the number
that decides whether the autoscaler catches a spike.

**Cost.** A replica is paid for from the decision that starts it until it is cancelled (a
scale-down cancels replicas still starting first) or has finished the requests it held when
it was retired. GPU-hours are that time x `tensor_parallel`, over the measurement window;
the point's `cost` is priced at the mean GPUs paid for, and its `gpu.autoscale` entry holds
the replicas paid and ready per window, the GPU-hours with their interval, the cold start and
the scale-ups. Only ready replicas are routed to.

`capsim autoscale SCENARIO` runs the autoscaled fleet and static fleets of `min_replicas` to
`max_replicas` (or `--static 1,2`) with the scenario's seed: each fleet sees the same
arrivals, questions and answer lengths, so the differences are the fleets'. It prints each
fleet's verdict, the SLA windows it fails, its worst window, GPU-hours and cost, the cheapest
static fleet that passes and what the autoscaler saves against it, and the P95 and replicas
per window; it writes `autoscale.json` and `autoscale.png`. The exit code is the autoscaled
fleet's verdict (0 pass, 1 fail, 3 inconclusive; 2 for bad input, one line naming the key:
`llm.autoscale: max_replicas (2) is below min_replicas (3); ...`).
"""

PLAN = """## Planning the autoscaler's settings

`capsim plan` searches `llm.autoscale` keys like any other knob, when the scenario has an
`llm.autoscale` section for the plan's values to replace:

```yaml
plan:
  llm.autoscale.max_replicas: [2, 3, 4]
  llm.autoscale.target: [4, 8, 16]
  llm.autoscale.weights_from: [ebs-gp3, nvme-gen4]
```

An autoscaled candidate is ordered by what it costs at `min_replicas`, the least it can;
once simulated, it is costed and ranked at the fleet it paid for, so the winner is the
cheapest measured fleet that passes. `llm.autoscale: null` in a derived scenario removes the
autoscaler again.

## What is and is not modelled

* A replica's cold start is the same every time (no image pull or node provisioning beyond
  what `engine_start_s` holds). By default any number start at once; `max_starting` caps the
  replicas starting together (a cluster that admits one new GPU node at a time): the rest of a
  scale-up is deferred to a later decision.
* Signals are read at the decision instant, as the HPA reads the latest scraped metric; no
  averaging over a window.
* A retired replica finishes what it holds (graceful shutdown); its slot cannot start a new
  replica until it has, and a scale-up with no free slot waits for the next decision.
* The per-window GPU utilisation of the timeline divides busy time by the run's mean number
  of ready replicas; the point's utilisation, KV occupancy and GPU load are over the ready
  replicas' time.
* `run.warmup_s: auto` is refused with an autoscaler: the fleet is costed over the whole
  window, so the cut must be the same for every replication.
"""


def render() -> str:
    return "\n".join(
        [
            INTRO,
            section("flash_sale", "The flash sale", windows=True),
            section("diurnal", "A day", windows=False),
            PLAN,
        ]
    )


def main() -> int:
    PAGE.write_text(render())
    sys.stdout.write(f"wrote {PAGE.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
