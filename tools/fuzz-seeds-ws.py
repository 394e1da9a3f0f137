#!/usr/bin/env python3
"""Writes the seed corpus of the `ws` fuzz target (fuzz/corpus/ws/), run once
when the target was added (2026-12-07). Input layout (docs/fuzzing.md): limit
byte (index into WS_LIMITS: 0 1 2 5 16 100 125 126 1000 65536), mode byte
(bit 0: the payload is a frame script; bit 1: pings between fragments in the
round trip), split count + selectors, payload."""
import os
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "ws")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
LIMIT_1000, LIMIT_100, LIMIT_64K, LIMIT_5 = 8, 5, 9, 3


def frame(b0, payload, masked=True, key=KEY, length=None):
    n = len(payload) if length is None else length
    mbit = 0x80 if masked else 0
    if n <= 125 and length is None:
        head = bytes([b0, mbit | n])
    elif n <= 0xFFFF and length is None:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    elif length is None:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def seed(name, payload, limit=LIMIT_1000, mode=0, splits=()):
    data = bytes([limit, mode, len(splits)]) + bytes(splits) + payload
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    t = lambda p: frame(0x81, p)
    # Valid streams.
    seed("text-hello", t(b"hello"))
    seed("text-empty", t(b""))
    seed("text-125", t(b"a" * 125))
    seed("text-126", t(b"b" * 126), splits=(1, 128))
    seed("binary-300", frame(0x82, bytes(range(256)) + b"x" * 44), splits=(3, 200))
    # A 64 KiB frame's header and its first bytes (the stream ends inside it).
    seed("binary-65536-partial", frame(0x82, b"\0" * 65536)[:40], limit=LIMIT_64K)
    seed("text-utf8", t("κόσμε €𐍈".encode()), splits=(40, 41, 42))
    seed("fragmented-text-split-code-point",
         frame(0x01, "κό".encode()[:1]) + frame(0x00, "κό".encode()[1:3]) + frame(0x80, "κό".encode()[3:]))
    seed("fragments-with-control",
         frame(0x01, b"frag1 ") + frame(0x89, b"ping") + frame(0x00, b"frag2 ")
         + frame(0x8A, b"") + frame(0x80, b"frag3") + t(b"next"), splits=(7, 99, 180))
    seed("ping-pong-close", frame(0x89, b"p" * 125) + frame(0x8A, b"x") + frame(0x88, b"\x03\xe8bye") + t(b"after"))
    seed("close-empty", frame(0x88, b""))
    seed("close-1012", frame(0x88, b"\x03\xf4drain"))
    seed("close-4999", frame(0x88, b"\x13\x87"))
    seed("many-messages", b"".join(t(bytes([65 + i]) * i) for i in range(20)), splits=(10, 50, 90, 130, 170, 210, 250))
    # Each error.
    seed("err-rsv1", frame(0xC1, b"x"))
    seed("err-rsv3", frame(0x91, b"x"))
    seed("err-opcode-3", frame(0x83, b""))
    seed("err-opcode-11", frame(0x8B, b"x"))
    seed("err-unmasked", frame(0x81, b"hi", masked=False))
    seed("err-fragmented-ping", frame(0x09, b""))
    seed("err-long-ping", frame(0x89, b"p" * 126))
    seed("err-continuation-first", frame(0x80, b"x"))
    seed("err-new-message-in-fragmented", frame(0x01, b"a") + t(b"b"))
    seed("err-length-top-bit", frame(0x82, b"", length=1 << 63))
    seed("err-non-minimal-16", bytes([0x82, 0xFE, 0, 5]) + KEY + b"12345")
    seed("err-non-minimal-64", bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 200]) + KEY + b"z" * 200)
    seed("err-too-large", t(b"c" * 101), limit=LIMIT_100)
    seed("err-too-large-fragments", frame(0x02, b"a" * 3) + frame(0x80, b"b" * 3), limit=LIMIT_5)
    seed("err-too-large-header-only", frame(0x82, b"", length=1 << 40))
    seed("err-utf8-overlong", t(b"\xc0\xaf"))
    seed("err-utf8-surrogate", t(b"\xed\xa0\x80"))
    seed("err-utf8-above-max", t(b"\xf4\x90\x80\x80"))
    seed("err-utf8-truncated", t(b"abc\xce"))
    seed("err-utf8-fail-fast", frame(0x01, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited"))
    seed("err-close-1-byte", frame(0x88, b"\x03"))
    seed("err-close-1005", frame(0x88, b"\x03\xed"))
    seed("err-close-2999", frame(0x88, b"\x0b\xb7"))
    seed("err-close-reason-utf8", frame(0x88, b"\x03\xe8\xff"))
    # Scripts (mode bit 0): b0, length byte, payload.
    seed("script-text", bytes([0x81, 5]) + b"hello", mode=1)
    seed("script-fragments", bytes([0x01, 2]) + b"ab" + bytes([0x89, 1]) + b"p" + bytes([0x80, 1]) + b"c", mode=3, splits=(50, 120))
    seed("script-rsv", bytes([0xE1, 1]) + b"x", mode=1)
    seed("script-close", bytes([0x88, 4]) + b"\x0f\xa0ok", mode=1)
    seed("script-utf8", bytes([0x01, 3]) + "€".encode() + bytes([0x80, 2]) + "é".encode(), mode=5)
    # Round-trip material (the payload itself, raw mode).
    seed("round-trip-text-pings", "round trip über fragments".encode(), mode=2, splits=(30, 60, 90, 200))
    seed("round-trip-binary", bytes(range(256)) * 2, limit=LIMIT_1000, mode=2, splits=(1, 2, 250))
    seed("round-trip-over-limit", b"y" * 200, limit=LIMIT_100, mode=2, splits=(64, 128))
    print(f"wrote {len(os.listdir(OUT))} seeds to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
