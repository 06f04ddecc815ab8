"""The sparse scaling-law engine: plans, trains, fits and reports what a spec describes."""

import os

# numpy's OpenBLAS threads spin against XLA's own thread pool: with both on a 2-core machine a
# tiny train step measured 7x slower. Data generation is small; XLA gets the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
