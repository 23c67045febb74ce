"""Fuzzing: hypothesis strategies and settings shared by the property tests of every parser, and the
coverage-guided atheris script ``fuzz_decoders.py`` (run by hand before a release, not in CI).

Every property test runs under :data:`FUZZ`: derandomized (the same examples on every run, so a
failure in CI is a failure on a laptop) and bounded in examples and time. What the fuzzers found is
kept as ordinary regression tests beside the property tests.
"""

from __future__ import annotations

from typing import Any


def require_text(value: Any) -> None:
    """Raise UnicodeEncodeError if a string in ``value`` (keys included) is not text: a lone
    surrogate, which no object could store or send."""
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, list):
        for item in value:
            require_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            require_text(key)
            require_text(item)
