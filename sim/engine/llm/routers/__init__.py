"""Routers: which replica a request goes to.  One module per policy, registered
in :data:`sim.registry.ROUTERS`; each is a class built with ``(replicas, rng)``
whose ``pick()`` returns a replica."""
