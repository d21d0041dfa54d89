#!/usr/bin/env bash
# Run every benchmark with its defaults, one after another (they share the machine's cores, so
# never run two at once), keeping each JSON result and its log in bench/results/.
set -u
cd "$(dirname "$0")/.."
mkdir -p bench/results
for s in throughput bars chain steal_balance stragglers wfcommons_bench locality io_read ingest_bench journal_overhead load_speed; do
  start=$(date +%s)
  python bench/$s.py > bench/results/$s.json 2> bench/results/$s.log
  echo "$s: exit $? in $(( $(date +%s) - start )) s; $(tail -n 1 bench/results/$s.log)"
done
