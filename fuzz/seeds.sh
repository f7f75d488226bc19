#!/usr/bin/env bash
# Writes the seed corpus of the `frame_decode_classify` fuzz target from the
# protocol test vectors (real Wazuh/OSSEC wires, hex in JSON lines):
#   udp-<name>  the wire itself (a UDP datagram),
#   tcp-<name>  the wire as one TCP frame (u32 little-endian length + wire),
#   tcp-all     every agent->manager vector framed back to back,
# plus the negative and replay vectors as they are.
# The corpus directory is git-ignored; run this before `cargo fuzz run`.
# Needs python3. Usage: fuzz/seeds.sh [corpus-dir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vectors="$here/../testdata/vectors"
out="${1:-$here/corpus/frame_decode_classify}"
mkdir -p "$out"
python3 - "$vectors" "$out" <<'PY'
import json, os, re, struct, sys

vectors, out = sys.argv[1], sys.argv[2]

def lines(name):
    with open(os.path.join(vectors, name)) as f:
        return [json.loads(l) for l in f if l.strip()]

def write(name, data):
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def frame(wire):
    return struct.pack("<I", len(wire)) + wire

n = 0
stream = b""
for v in lines("vectors.jsonl"):
    wire = bytes.fromhex(v["wire_hex"])
    write("udp-" + v["name"], wire)
    write("tcp-" + v["name"], frame(wire))
    if v["direction"] == "agent->manager":
        stream += frame(wire)
    n += 2
write("tcp-all", stream)
n += 1
for v in lines("negative.jsonl"):
    wire = bytes.fromhex(v["wire_hex"])
    write("neg-" + v["transport"] + "-" + v["name"], wire)
    n += 1
for v in lines("replay.jsonl"):
    wire = bytes.fromhex(v["wire_hex"])
    write("replay-udp", wire)
    write("replay-tcp", frame(wire) + frame(wire))
    n += 2
write("ping", b"#ping")
n += 1
print(f"{n} seeds in {out}")
PY
