"""Performance benchmarks of the engine: `python -m bench` from the repository
root measures everything in one process and writes BENCHMARKS.md."""
