#!/usr/bin/env bash
# The main demo: generate a text corpus, count its words on 4 MPI ranks, show the top words.
#   bash jobs/demo.sh [MEGABYTES] [RANKS]      (defaults: 200 MB, 4 ranks)
# Uses the project's .venv (made by .ci/setup.sh) when it exists, else python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-200}
RANKS=${2:-4}
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
MPIEXEC=mpiexec; [ -x "$(dirname "$PY")/mpiexec" ] && MPIEXEC="$(dirname "$PY")/mpiexec"
mkdir -p data
CORPUS=data/corpus-${MB}MB.txt
if [ ! -s "$CORPUS" ]; then
  echo "generating $CORPUS ..."
  PYTHONPATH=jobs "$PY" -c "import wordcount; wordcount.generate('$CORPUS', $MB)"
fi
OUT=data/wordcount-out
PYTHONPATH=jobs "$MPIEXEC" -n "$RANKS" "$PY" -m mpitiny run jobs/wordcount.json \
  --param input="$CORPUS" --param output="$OUT" --out data/run-wordcount
"$PY" - "$CORPUS" data/run-wordcount <<'PYEND'
import json, os, sys
corpus, run = sys.argv[1], sys.argv[2]
summary = json.load(open(os.path.join(run, "summary.json")))
for name in sorted(os.listdir(os.path.join(run, "results"))):
    for line in open(os.path.join(run, "results", name)):
        rec = json.loads(line)
        if rec["id"] == "merge":
            merged = rec["value"]
seconds = merged["finished"] - summary["first_task_start"]
mb = os.path.getsize(corpus) / 1e6
print(f"top words of {corpus} ({merged['total']:,} words, {merged['words']:,} distinct):")
for word, n in merged["top"]:
    print(f"  {word:<12} {n:>12,}")
print(f"{mb:.0f} MB in {seconds:.2f} s on {summary['ranks']} ranks = {mb / seconds:.1f} MB/s "
      f"(first task start to merge end); full counts: {merged['output']}")
PYEND
