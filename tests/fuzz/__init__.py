"""Fuzzing: hypothesis strategies and settings shared by the property tests of every parser, and the
coverage-guided atheris script ``fuzz_decoders.py`` (run by hand before a release, not in CI).

Every property test runs under :data:`FUZZ`: derandomized (the same examples on every run, so a
failure in CI is a failure on a laptop) and bounded in examples and time. What the fuzzers found is
kept as ordinary regression tests beside the property tests.
"""
