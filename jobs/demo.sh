#!/usr/bin/env bash
# The main demo: generate a text corpus, ingest it into HDF5 (8 MiB chunks), count its words
# with the MapReduce wordcount (jobs/wordcount.json) on 4 MPI ranks, show the top words and
# the throughput.
#   bash jobs/demo.sh [MEGABYTES] [RANKS] [CHUNK]      (defaults: 200 MB, 4 ranks, 8MiB)
# DEMO_DIR (default data/) holds the corpus, the HDF5 file, the outputs and the run directory.
# Uses the project's .venv (made by .ci/setup.sh) when it exists, else python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-200}
RANKS=${2:-4}
CHUNK=${3:-8MiB}
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
MPIEXEC=mpiexec; [ -x "$(dirname "$PY")/mpiexec" ] && MPIEXEC="$(dirname "$PY")/mpiexec"
export PYTHONPATH="$PWD/jobs${PYTHONPATH:+:$PYTHONPATH}"
DIR=${DEMO_DIR:-data}
mkdir -p "$DIR"
CORPUS=$DIR/corpus-${MB}MB.txt
DATA=$DIR/corpus-${MB}MB-${CHUNK}.h5
if [ ! -s "$CORPUS" ]; then
  echo "generating $CORPUS ..."
  "$PY" -c "import wordcount; wordcount.generate('$CORPUS', $MB)"
fi
if [ ! -s "$DATA" ] || [ "$CORPUS" -nt "$DATA" ]; then
  "$PY" -m mpitiny ingest "$CORPUS" -o "$DATA" --chunk "$CHUNK"
fi
OUT=$DIR/wordcount-out
RUN=$DIR/run-wordcount
rm -rf "$RUN"      # each demo counts afresh (the same command again would find the run complete)
"$MPIEXEC" -n "$RANKS" "$PY" -m mpitiny run jobs/wordcount.json \
  --param input="$DATA" --param output="$OUT" --out "$RUN"
"$PY" - "$CORPUS" "$RUN" <<'PYEND'
import json, os, sys
corpus, run = sys.argv[1], sys.argv[2]
summary = json.load(open(os.path.join(run, "summary.json")))
merged = None
for name in sorted(os.listdir(os.path.join(run, "results"))):
    if name.endswith(".jsonl"):
        for line in open(os.path.join(run, "results", name)):
            rec = json.loads(line)
            if rec["id"] in ("commit", "finish"):
                merged = rec["value"]
seconds = summary["last_task_end"] - summary["first_task_start"]
mb = merged["bytes"] / 1e6
print(f"top words of {corpus} ({merged['total']:,} words, {merged['words']:,} distinct):")
for word, n in merged["top"]:
    print(f"  {word:<12} {n:>12,}")
print(f"{mb:.0f} MB in {seconds:.2f} s on {summary['ranks']} ranks = {mb / seconds:.1f} MB/s "
      f"(first task start to last task end, {summary['tasks']} tasks); "
      f"full counts: {merged['output']}")
PYEND
