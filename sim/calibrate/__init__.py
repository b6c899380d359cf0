"""Real measurements on this machine, written to calibration files.

``retrieval`` builds and times real hnswlib / numpy / pure-Python / faiss IVF
indexes (each kind in :mod:`sim.indexes`) on a synthetic corpus
(``corpus``) or the user's vectors; ``gpu`` fits the roofline's
efficiencies to measured LLM step times.  The simulator never imports this
package: it reads the files through :mod:`sim.physics.retrieval`.  The
``capsim calibrate`` commands are in :mod:`sim.cli.calibrate`.
"""
