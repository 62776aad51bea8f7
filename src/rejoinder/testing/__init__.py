"""Test data that looks like the real thing, for tests and benchmarks.

Nothing in the runtime imports this package: it generates inputs, it is not a stage.
`python -m rejoinder.testing synth-reddit --comments N --out FILE` writes a dump.
"""
