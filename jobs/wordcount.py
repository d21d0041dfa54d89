"""Wordcount over a text file, as mpitiny tasks: ``count`` one byte range, ``merge`` the counts.

A word is a maximal run of non-whitespace bytes (exactly what ``bytes.split()`` returns),
case-sensitive, as in Hadoop's WordCount. Split ``k`` of ``n`` covers the lines that *start*
in bytes ``[k*size//n, (k+1)*size//n)``, so every line is counted once, whatever ``n`` is.
Counts travel between tasks as JSON objects whose keys are the words' bytes decoded as
Latin-1 (a lossless byte <-> str mapping).

``generate`` writes a deterministic Zipf-distributed corpus for the demo.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import numpy as np

from mpitiny.io.commit import atomic_output


def count(path: str, split: int, nsplits: int) -> dict:
    """Word counts of the lines that start in split ``split`` of ``nsplits`` of ``path``."""
    size = os.path.getsize(path)
    lo, hi = size * split // nsplits, size * (split + 1) // nsplits
    with open(path, "rb") as f:
        if lo > 0:
            f.seek(lo - 1)
            if f.read(1) != b"\n":
                f.readline()              # that line belongs to the previous split
        start = f.tell()
        data = f.read(max(hi - start, 0))
        if data and not data.endswith(b"\n"):
            data += f.readline()          # finish the last line that starts in this split
    counts = Counter(data.split())
    return {"bytes": len(data), "counts": {w.decode("latin-1"): n for w, n in counts.items()}}


def merge(output: str, inputs: dict, top: int = 10) -> dict:
    """Sum the splits' counts; write OUTPUT/wordcount.tsv (count descending, then word)."""
    total: Counter = Counter()
    nbytes = 0
    for part in inputs.values():
        total.update(part["counts"])
        nbytes += part["bytes"]
    rows = sorted(total.items(), key=lambda kv: (-kv[1], kv[0].encode("latin-1")))
    final = os.path.join(output, "wordcount.tsv")
    with atomic_output(final) as f:
        for word, n in rows:
            f.write(word.encode("latin-1") + b"\t" + str(n).encode() + b"\n")
    return {"words": len(rows), "total": sum(total.values()), "bytes": nbytes,
            "top": [[w, n] for w, n in rows[:top]], "output": final, "finished": time.time()}


def generate(path: str, megabytes: float = 100, vocabulary: int = 50_000, seed: int = 1) -> None:
    """A corpus of ``megabytes`` MB: Zipf-distributed words, 4 to 16 words per line."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    words = [bytes(letters[rng.integers(0, 26, rng.integers(2, 10))]) for _ in range(vocabulary)]
    target = int(megabytes * 1e6)
    tmp = f"{path}.tmp{os.getpid()}"
    written = 0
    with open(tmp, "wb") as f:
        while written < target:
            ids = np.minimum(rng.zipf(1.3, 200_000), vocabulary) - 1
            per_line = rng.integers(4, 17, len(ids) // 4)
            bounds = np.cumsum(per_line)
            bounds = bounds[bounds < len(ids)]
            lines = [b" ".join(words[i] for i in ids[a:b]) for a, b in zip(np.r_[0, bounds[:-1]], bounds)]
            chunk = b"\n".join(lines) + b"\n"
            f.write(chunk)
            written += len(chunk)
    os.replace(tmp, path)
