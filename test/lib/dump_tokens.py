#!/usr/bin/env python3
"""dump_tokens.py OUTDIR FILE...: the byte strings hidden in text tokens of pg_dump output.

Writes OUTDIR/decoded.bin: every hex run of 32+ digits (bytea prints as \\x...) and every base64
run of 22+ characters (crm's ciphertexts, "crm1$<key id>$<base64>") found in the files, decoded,
one after another (test/lib/keysearch.c tries every window of it as a key), and OUTDIR/wrapped.bin:
those decoding to exactly 128 bytes, the size of a wrapped data key. Prints the counts.
"""
import base64
import binascii
import re
import sys

HEX = re.compile(rb"[0-9a-fA-F]{32,}")
B64 = re.compile(rb"[A-Za-z0-9+/]{22,}={0,2}")


def tokens(data):
    for m in HEX.finditer(data):
        s = m.group(0)
        for start in (0, 1):  # both alignments of an odd-length run
            t = s[start:]
            t = t[: len(t) - len(t) % 2]
            if len(t) >= 32:
                yield "hex", binascii.unhexlify(t)
    for m in B64.finditer(data):
        s = m.group(0).rstrip(b"=")
        s = s[: len(s) - len(s) % 4 if len(s) % 4 == 1 else len(s)]
        try:
            yield "b64", base64.b64decode(s + b"=" * (-len(s) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass


def main():
    out = sys.argv[1]
    seen = set()
    counts = {"hex": 0, "b64": 0}
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            data = f.read()
        for kind, b in tokens(data):
            if len(b) >= 16 and b not in seen:
                seen.add(b)
                counts[kind] += 1
    with open(out + "/decoded.bin", "wb") as d, open(out + "/wrapped.bin", "wb") as w:
        for b in sorted(seen):
            d.write(b)
            if len(b) == 128:
                w.write(b)
    wrapped = sum(1 for b in seen if len(b) == 128)
    print(f"hex {counts['hex']} base64 {counts['b64']} wrapped-size {wrapped}")


if __name__ == "__main__":
    main()
