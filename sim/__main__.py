"""``python -m sim`` is the ``capsim`` command."""

from sim.cli import main

main()
