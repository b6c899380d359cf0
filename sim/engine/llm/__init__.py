"""GPU replicas running continuous batching over a paged KV cache.

``replica`` (the step loop and its closed-form decode epochs), ``kv`` (block
bookkeeping), ``schedulers/`` (what a step processes), ``routers/`` (which
replica a request goes to), ``stage`` (the router in front of the replicas).
"""
