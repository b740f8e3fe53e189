#!/usr/bin/env bash
# The committed record of a long experiment run, so that it survives the machine it runs on.
#
#   scripts/experiments/record.sh save    [--out runs/reproduce] [--record docs/results-record]
#   scripts/experiments/record.sh restore [--out runs/reproduce] [--record docs/results-record]
#
# `reproduce.sh` runs for days in the background, over several machines; its run directory (runs/, not committed)
# holds model weights of tens of megabytes per training. `save` copies what the results are made of into the
# record (a directory in the repository, a few hundred kilobytes): the stored settings, the data stamp, the
# memory table's measurements (memory.json, `scripts/bench memory`), every
# finished training's config.json, summary.json and metrics.csv, every evaluation's csv, json and time file, and
# the commit of each model's binary. `restore` copies the record back into a run directory where files are missing,
# so that `reproduce.sh --status` counts the recorded trainings as done, `results.py` renders them and a re-run
# goes on with what is missing. Weights are not recorded: a training that needs an earlier one's model
# (EF → BPTT needs its seed's EF model) retrains that model (same command, same seed) when its weights are absent.
# Existing files are never overwritten, in either direction.
set -euo pipefail
cd "$(dirname "$0")/../.."
usage() { sed -n '4,5p' "$0" | sed 's/^# *//'; }
help() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
[ $# -ge 1 ] || { usage >&2; exit 2; }
case $1 in -h|--help) help; exit 0 ;; esac
action=$1; shift
out=runs/reproduce
record=docs/results-record
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--record) [ $# -ge 2 ] || { echo "record.sh: $1 needs a value" >&2; exit 2; } ;;&
    --out) out=$2; shift ;;
    --record) record=$2; shift ;;
    -h|--help) help; exit 0 ;;
    *) echo "record.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# copy FROM TO: every recorded kind of file under FROM into TO, keeping paths, skipping files TO has.
copy() {
  local from=$1 to=$2 n=0 f rel
  [ -d "$from" ] || { echo "record.sh: no directory $from" >&2; exit 2; }
  while IFS= read -r -d '' f; do
    rel=${f#"$from"/}
    case $rel in
      settings/*.env|data-stamp.txt|plan.json|memory.json|bin/*/commit.txt) ;;
      train/*/config.json|train/*/summary.json|train/*/metrics.csv)
        # an unfinished training is not recorded (it resumes from its checkpoint, which is not recorded)
        [ -s "$from/$(dirname "$rel")/summary.json" ] || continue ;;
      eval/*/*/*.csv|eval/*/*/*.json|eval/*/*/*.time) ;;
      *) continue ;;
    esac
    [ -e "$to/$rel" ] && continue
    mkdir -p "$to/$(dirname "$rel")"
    cp "$f" "$to/$rel.tmp" && mv "$to/$rel.tmp" "$to/$rel"
    n=$((n + 1))
  done < <(find "$from" -type f ! -name '*.tmp' -print0 | sort -z)
  echo "record.sh: $n file(s) copied from $from to $to"
}

case $action in
  save) copy "$out" "$record" ;;
  restore) mkdir -p "$out"; copy "$record" "$out" ;;
  *) echo "record.sh: unknown action $action (save or restore)" >&2; usage >&2; exit 2 ;;
esac
