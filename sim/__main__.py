"""``python -m sim`` is the ``capsim`` command."""

from sim.cli import main

if __name__ == "__main__":  # importing the module (documentation tools do) runs nothing
    main()
