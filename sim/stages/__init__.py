"""One SimPy stage per module: its queue, its servers, the timestamps it stamps."""
