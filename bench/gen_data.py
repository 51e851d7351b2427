#!/usr/bin/env python3
"""Deterministic benchmark data (seeded, no downloads), about 1 GiB by default.

  gen_data.py create DIR [--scale 1.0]   build the data set
  gen_data.py mutate DIR                 change about 5% of it (edits, an insertion into a large
                                         file, added and deleted files), deterministically

Contents: tens of thousands of small source-like files in a nested tree, a few hundred medium
binary files of mixed compressibility, large files (incompressible and log-like), exact duplicates,
and copies with bytes inserted near the start (content-defined chunking must deduplicate these).
"""
import os, random, sys, zlib

WORDS = ("func let var return if else for while struct class import public private static self "
         "init deinit guard throw try await async case switch default break continue in where "
         "value index buffer count size data error result string array map filter reduce").split()

def source_text(r, n):
    lines, size = [], 0
    while size < n:
        depth = r.randint(0, 4)
        line = "    " * depth + " ".join(r.choice(WORDS) for _ in range(r.randint(2, 10)))
        if r.random() < 0.3: line += " = %d" % r.randint(0, 100000)
        if r.random() < 0.2: line += '  // ' + " ".join(r.choice(WORDS) for _ in range(r.randint(2, 6)))
        lines.append(line); size += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:n]

def mixed_binary(r, n):
    """Blocks of random, repetitive and text-like data: compressibility varies by file."""
    out = bytearray()
    mode = r.random()
    while len(out) < n:
        k = r.randint(4096, 65536)
        x = r.random()
        if x < mode * 0.7:
            out += r.randbytes(k)
        elif x < 0.85:
            out += bytes([r.randint(0, 255)]) * (k // 64) + r.randbytes(k - k // 64)
        else:
            out += source_text(r, k)
    return bytes(out[:n])

def log_text(r, n):
    out, t = [], 1_700_000_000
    size = 0
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    while size < n:
        t += r.randint(0, 3)
        line = "%d %s [worker-%d] request id=%08x path=/api/v1/%s status=%d took=%dms" % (
            t, r.choice(levels), r.randint(1, 16), r.getrandbits(32), r.choice(WORDS), r.choice([200, 200, 200, 404, 500]), r.randint(1, 900))
        out.append(line); size += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:n]

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

def create(root, scale):
    r = random.Random(20261130)
    MiB = 1 << 20
    small = int(40000 * scale)
    for i in range(small):
        d = "src/mod%03d/pkg%02d/sub%d" % (i % 97, (i // 97) % 23, i % 3)
        write(os.path.join(root, d, "file%05d.swift" % i), source_text(r, int(r.lognormvariate(8.3, 0.9)) % 200000 + 64))
    for i in range(int(300 * scale)):
        write(os.path.join(root, "media/blob%03d.bin" % i), mixed_binary(r, r.randint(200_000, 1_600_000)))
    write(os.path.join(root, "big/random.img"), r.randbytes(int(160 * MiB * scale)))
    write(os.path.join(root, "big/app.log"), log_text(r, int(160 * MiB * scale)))
    # Exact duplicates.
    for i in range(0, int(300 * scale), 10):
        with open(os.path.join(root, "media/blob%03d.bin" % i), "rb") as f:
            write(os.path.join(root, "dups/copy%03d.bin" % i), f.read())
    # Copies with bytes inserted near the start.
    with open(os.path.join(root, "big/random.img"), "rb") as f:
        data = f.read(int(64 * MiB * scale))
    write(os.path.join(root, "big/random-shifted.img"), data[:1000] + b"INSERTED" * 100 + data[1000:])
    for i in range(0, int(300 * scale), 25):
        with open(os.path.join(root, "media/blob%03d.bin" % i), "rb") as f:
            b = f.read()
        write(os.path.join(root, "shifted/blob%03d.bin" % i), b[:500] + b"xyz" + b[500:])

def mutate(root):
    r = random.Random(4242)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    small = [f for f in files if f.endswith(".swift")]
    for f in r.sample(small, len(small) // 20):          # edit 5% of the source files
        with open(f, "ab") as h: h.write(source_text(r, 200))
    for f in r.sample(small, len(small) // 100):         # delete 1%
        os.remove(f)
    for i in range(len(small) // 50):                    # add 2%
        write(os.path.join(root, "src/new/added%05d.swift" % i), source_text(r, r.randint(500, 20000)))
    big = os.path.join(root, "big/random.img")           # insert into the middle of a large file
    with open(big, "rb") as h: data = h.read()
    mid = len(data) // 2
    with open(big, "wb") as h: h.write(data[:mid] + r.randbytes(1 << 20) + data[mid:])
    with open(os.path.join(root, "big/app.log"), "ab") as h:   # logs grow
        h.write(log_text(r, 8 << 20))
    for f in r.sample([f for f in files if "/media/" in f], 10):  # rewrite some binaries
        write(f, mixed_binary(r, r.randint(200_000, 1_600_000)))

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("create", "mutate"):
        print(__doc__); sys.exit(2)
    scale = float(sys.argv[sys.argv.index("--scale") + 1]) if "--scale" in sys.argv else 1.0
    (create(sys.argv[2], scale) if sys.argv[1] == "create" else mutate(sys.argv[2]))
