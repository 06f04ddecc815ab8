"""The sparse scaling-law engine: plans, trains, fits and reports what a spec describes."""

__version__ = "0.1.0"
