"""Coverage-guided fuzzing (atheris, libFuzzer) of every decoder of client bytes, for a fixed time.

    .venv/bin/pip install atheris                      # a prebuilt wheel on Linux x86-64, CPython 3.11
    .venv/bin/python -m tests.fuzz.fuzz_decoders --seconds 600 [--corpus DIR] [LIBFUZZER_FLAG ...]

Run before a release, not in CI (the hypothesis property tests beside it run in CI). Each input's
first byte picks a decoder, the rest is its input:

- ``actors.wire.decode``: frames, or ProtocolError;
- ``server.codec.decode_body`` / ``decode_call`` (JSON and CBOR) and ``decode_cursor``, and the
  WebSocket message decoders of ``server/websocket.py``: a value holding only text, or an
  ActorError whose HTTP status is 4xx.

Anything else (another exception, a 5xx, a string that is not text) is a finding: libFuzzer stops,
prints the traceback and writes the input to ``crash-<sha1>`` in the working directory. Keep it as
a regression test, fix the cause, run again. Without ``--corpus`` the run starts from a few valid
inputs of each decoder in a temporary folder; with it, the folder keeps what the run learned. Other
arguments go to libFuzzer as they are (``-jobs=2``, ``-dict=...``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris
import cbor2

from tests.fuzz import require_text

with atheris.instrument_imports(include=["actors", "server", "cbor2"]):
    from actors import wire
    from actors.errors import ActorError
    from actors.wire import Call, Error, Hello, ProtocolError, Result, Welcome
    from server import codec
    from server.errors import status_of
    from server.websocket import _decode_cbor, _decode_json

MAX_FRAME_BYTES = 1 << 20


def _wire(data: bytes) -> None:
    try:
        wire.decode(data)
    except ProtocolError:
        pass


def _value_or_4xx(decode: Callable[[bytes], Any]) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        try:
            value = decode(data)
        except ActorError as exc:
            if not 400 <= status_of(exc) < 500:
                raise AssertionError(f"{type(exc).__name__} is {status_of(exc)}, not 4xx") from exc
            return
        require_text(value)

    return target


#: the decoders, chosen by an input's first byte (modulo their number)
TARGETS: list[Callable[[bytes], None]] = [
    _wire,
    _value_or_4xx(lambda data: codec.decode_body(data, cbor=False)),
    _value_or_4xx(lambda data: codec.decode_body(data, cbor=True)),
    _value_or_4xx(lambda data: codec.decode_call(data, cbor=False)),
    _value_or_4xx(lambda data: codec.decode_call(data, cbor=True)),
    _value_or_4xx(lambda data: codec.decode_cursor(data.decode("utf-8", "replace"))),
    # wsproto hands the node text frames that are valid UTF-8 only
    _value_or_4xx(lambda data: _decode_json(data.decode("utf-8", "replace"), MAX_FRAME_BYTES)),
    _value_or_4xx(_decode_cbor),
]


def test_one_input(data: bytes) -> None:
    if data:
        TARGETS[data[0] % len(TARGETS)](data[1:])


def seeds() -> list[bytes]:
    """A few valid inputs of each decoder, prefixed with its selector byte."""
    frames = [
        Hello((1,), "fuzz"),
        Welcome(1, "n1", 64, 1 << 20, (("n1", "http://a:1"),), 0),
        Call(1, "Counter", "home", "increment", [1, "x", [b"\x00", 1.5]], {"by": 2}, 0.5),
        Result(2, {"value": [1, None, True]}),
        Error(None, {"type": "InvalidArgument", "message": "bad"}),
    ]
    body = {"args": [1, "é", [True, None, 2.5]], "kwargs": {"by": 2, "meta": {"k": "v"}}}
    chat = {"user": "ann", "text": "hi", "ts": 1}
    return [
        bytes([0]) + wire.encode(frames),
        bytes([1]) + json.dumps(body).encode(),
        bytes([2]) + cbor2.dumps(body),
        bytes([3]) + json.dumps(body, ensure_ascii=True).encode(),
        bytes([4]) + cbor2.dumps({"args": [2**70, b"x"], "kwargs": {}}),
        bytes([5]) + codec.encode_cursor(("Counter", "home", "00" * 32)).encode(),
        bytes([6]) + json.dumps(chat).encode(),
        bytes([7]) + cbor2.dumps({"type": "join", "user": "ann", "meta": {"x": 1.5}}),
    ]


#: tokens libFuzzer splices into inputs (its ``-dict``): the JSON and CBOR decoders are C code that
#: atheris cannot instrument, so coverage alone would not lead a mutation to an escape or a tag
DICTIONARY = [
    rb'"\ud800"', rb'"\udc00"', rb'"\u0000"', rb'"\\"', b"1e400", b"-0", b"NaN", b"Infinity",
    b"true", b"null", b'{"args":[', b'"kwargs":{', b'{"user":"a","text":"b","ts":',
    b"\x9f", b"\xbf", b"\xff", b"\xc2\x49", b"\xd8\x1c", b"\xd8\x1d\x00", b"\xf9\x7e\x00",
    b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
]  # fmt: skip


def _write_dictionary(path: Path) -> None:
    lines = ['"' + "".join(f"\\x{byte:02x}" for byte in token) + '"' for token in DICTIONARY]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, required=True, help="time budget of the whole run")
    parser.add_argument("--corpus", type=Path, help="folder of inputs to start from and to grow")
    args, libfuzzer_flags = parser.parse_known_args(argv[1:])
    corpus = args.corpus
    if corpus is None:
        corpus = Path(tempfile.mkdtemp(prefix="fuzz-decoders-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)
    if not any(flag.startswith("-dict=") for flag in libfuzzer_flags):
        dictionary = Path(tempfile.mkdtemp(prefix="fuzz-dict-")) / "decoders.dict"
        _write_dictionary(dictionary)
        libfuzzer_flags.append(f"-dict={dictionary}")
    atheris.Setup(
        [argv[0], f"-max_total_time={args.seconds}", *libfuzzer_flags, str(corpus)], test_one_input
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
