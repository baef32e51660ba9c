"""The phone recognition process (`python -m engines.phone_worker`, started by engines/phone_process.py).

Reads utterances from stdin, each an 8-byte little-endian sample count followed by that many 16 kHz int16
samples, and answers each with one line of JSON on stdout: [[label, start_seconds, end_seconds], ...]. Ends
when its input ends (the parent closed it, or exited). It imports numpy and pocketsphinx only.
"""

from __future__ import annotations

import json
import signal
import struct
import sys

HEADER = struct.Struct("<Q")


def _read_exactly(stream, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            return None
        data += piece
    return bytes(data)


def main() -> None:
    import numpy as np

    from .phonemes import recognise_phones

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal reaches the whole group: the parent decides
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the reply stream
    while (header := _read_exactly(requests, HEADER.size)) is not None:
        (count,) = HEADER.unpack(header)
        data = _read_exactly(requests, 2 * count)
        if data is None:
            return
        phones = recognise_phones(np.frombuffer(data, "<i2"))
        replies.write(json.dumps([[p.label, p.start, p.end] for p in phones]).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    main()
