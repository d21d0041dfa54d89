#!/usr/bin/env python
"""Real-text corpora for the MapReduce benchmarks, built from what a Debian/Ubuntu machine has.

    python bench/corpora.py /work/corpora [--megabytes 210] [--only prose,logs,...]

writes ``DIR/NAME.txt`` and ``DIR/NAME.json`` (the manifest) for each corpus:

* ``generated``: the project's Zipf words, ``jobs/wordcount.py:generate(seed=1)``.
* ``prose`` (prose and documentation): ``/usr/share/doc`` but its changelogs and NEWS,
  ``/usr/share/common-licenses``, the English man pages (``/usr/share/man/man*``, roff).
* ``logs`` (logs and changelogs): the text files of ``/var/log``, every ``changelog*`` and
  ``NEWS*`` under ``/usr/share/doc``.
* ``code`` (source code): ``*.py`` of the Python standard library and ``/usr/lib/python3``,
  ``/usr/include``, Perl (``/usr/share/perl*``, ``/usr/lib/*/perl*``), the Vim runtime.
* ``multilingual`` (UTF-8 in many scripts): the translations (``msgstr``) of every gettext
  catalogue under ``/usr/share/locale`` that declares UTF-8, the translated man pages
  (``/usr/share/man/LANG/``), ``/usr/share/i18n``.

Determinism: files are taken in sorted path order, ``*.gz`` decompressed, binary files (a NUL
byte in the first 8 KiB) skipped, each file's bytes written as they are followed by a
newline if they do not end in one. When the sources hold fewer than ``--megabytes`` MB, the
same sequence is written again (a *pass*) until the corpus reaches the size; the last pass is
cut at a file boundary once the size is reached. The same machine (the same installed
packages) gives the same bytes; the manifest records the number of files, the unique bytes,
the passes and a BLAKE2b digest of the corpus, so two machines can be compared.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
NAMES = ("generated", "prose", "logs", "code", "multilingual")


def _walk(root: str, keep: Callable[[str], bool]) -> list:
    """Regular files under ``root`` (no symlinks) that ``keep`` accepts, sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p) and os.path.isfile(p) and keep(p):
                out.append(p)
    return sorted(out)


def _read(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError):
        return b""


def _text_files(paths: Iterable[str]) -> Iterator[bytes]:
    for p in paths:
        data = _read(p)
        if data and b"\0" not in data[:8192]:
            yield data if data.endswith(b"\n") else data + b"\n"


def _is_changelog(path: str) -> bool:
    base = os.path.basename(path).lower()
    return base.startswith(("changelog", "news"))


def prose() -> Iterator[bytes]:
    yield from _text_files(_walk("/usr/share/doc", lambda p: not _is_changelog(p)))
    yield from _text_files(_walk("/usr/share/common-licenses", lambda p: True))
    for d in sorted(glob.glob("/usr/share/man/man*")):
        yield from _text_files(_walk(d, lambda p: True))


def logs() -> Iterator[bytes]:
    yield from _text_files(_walk("/var/log", lambda p: "/journal/" not in p))
    yield from _text_files(_walk("/usr/share/doc", _is_changelog))


def code() -> Iterator[bytes]:
    py = sorted(glob.glob("/usr/lib/python3.*")) + ["/usr/lib/python3"]
    for root in py:
        yield from _text_files(_walk(root, lambda p: p.endswith(".py")))
    yield from _text_files(_walk("/usr/include", lambda p: True))
    for root in sorted(glob.glob("/usr/share/perl*") + glob.glob("/usr/lib/*/perl*")):
        yield from _text_files(_walk(root, lambda p: p.endswith((".pm", ".pl", ".pod", ".t"))))
    yield from _text_files(_walk("/usr/share/vim", lambda p: p.endswith((".vim", ".txt"))))


def mo_strings(blob: bytes) -> list:
    """The translated strings of a gettext ``.mo`` catalogue (GNU format, either byte
    order), or none if it is malformed or does not declare UTF-8."""
    if len(blob) < 28:
        return []
    for order in ("<", ">"):
        magic, _, n, _, trans = struct.unpack_from(order + "5I", blob, 0)
        if magic == 0x950412DE:
            break
    else:
        return []
    out = []
    for i in range(n):
        if trans + 8 * i + 8 > len(blob):
            return []
        length, at = struct.unpack_from(order + "2I", blob, trans + 8 * i)
        out.append(blob[at:at + length])
    if not out or b"charset=utf-8" not in out[0].lower():     # the header: msgid ""
        return []
    return [s.replace(b"\0", b"\n") for s in out[1:] if s]


def multilingual() -> Iterator[bytes]:
    for p in _walk("/usr/share/locale", lambda p: p.endswith(".mo")):
        strings = mo_strings(_read(p))
        if strings:
            yield b"\n".join(strings) + b"\n"
    for d in sorted(glob.glob("/usr/share/man/*")):
        if not os.path.basename(d).startswith("man"):
            yield from _text_files(_walk(d, lambda p: True))
    yield from _text_files(_walk("/usr/share/i18n", lambda p: True))


SOURCES: dict = {"prose": prose, "logs": logs, "code": code, "multilingual": multilingual}


def build(name: str, path: str, megabytes: float) -> dict:
    """Write corpus ``name`` to ``path`` (under a temporary name, then renamed); its manifest."""
    t0 = time.perf_counter()
    target = int(megabytes * 1e6)
    tmp = f"{path}.tmp{os.getpid()}"
    if name == "generated":
        sys.path.insert(0, str(REPO_ROOT / "jobs"))
        import wordcount
        wordcount.generate(tmp, megabytes)
        files, unique, passes = 0, os.path.getsize(tmp), 1
    else:
        files = unique = passes = written = 0
        with open(tmp, "wb") as f:
            while written < target:
                passes += 1
                wrote_any = False
                for data in SOURCES[name]():
                    f.write(data)
                    written += len(data)
                    wrote_any = True
                    if passes == 1:
                        files += 1
                        unique += len(data)
                    if written >= target:
                        break
                if not wrote_any:
                    raise SystemExit(f"corpora: no source files for {name!r} on this machine")
    os.replace(tmp, path)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    manifest = {"name": name, "file": path, "bytes": os.path.getsize(path), "source_files": files,
                "unique_bytes": unique, "passes": passes, "blake2b": h.hexdigest(),
                "seconds": round(time.perf_counter() - t0, 2)}
    with open(path[:-4] + ".json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def ensure(directory: str, name: str, megabytes: float) -> str:
    """``DIR/NAME.txt``, built if missing or made for a smaller size."""
    path = os.path.join(directory, f"{name}.txt")
    try:
        with open(path[:-4] + ".json", encoding="utf-8") as f:
            have = json.load(f)
        if have["bytes"] >= megabytes * 1e6 and os.path.getsize(path) == have["bytes"]:
            return path
    except (OSError, ValueError, KeyError):
        pass
    os.makedirs(directory, exist_ok=True)
    m = build(name, path, megabytes)
    print(f"corpora: {name}: {m['bytes'] / 1e6:,.1f} MB from {m['source_files']} files "
          f"({m['unique_bytes'] / 1e6:,.1f} MB unique, {m['passes']} passes) in {m['seconds']} s",
          file=sys.stderr)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", help="where the corpora go (not the repository)")
    ap.add_argument("--megabytes", type=float, default=210, help="size of each (default 210)")
    ap.add_argument("--only", default=",".join(NAMES), help="comma-separated corpus names")
    a = ap.parse_args(argv)
    for name in a.only.split(","):
        if name not in NAMES:
            ap.error(f"unknown corpus {name!r} (one of {', '.join(NAMES)})")
        ensure(a.directory, name, a.megabytes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
