"""Performance benchmarks of the engine (DESIGN.md section 7): `python -m bench` from the repository
root measures everything in one process and writes BENCHMARKS.md."""
