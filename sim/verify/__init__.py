"""``capsim verify``: hold capsim's prediction against a real serving stack (see :mod:`sim.verify.run`)."""
