#!/usr/bin/env bash
# Pilot of issue 9's comparison on the 64-site DFT relaxations that exist before the test split does: choose the
# fine-tuning methods for the full run (scripts/experiments/reproduce.sh) on a stand-in split of finished
# structures. SO3krates (Si only), FIRE dt 0.1, T = 60, checkpointed gradients, batch 1, cosine schedule; every
# model evaluated under one protocol (FIRE to 0.01 eV/Å, ≤ 500 steps). Results: docs/pilot.md.
#
#   scripts/experiments/pilot.sh [OUT_DIR]        (default runs/pilot; about 45 min on one core)
#
# Environment: TRAIN, TEST, UNSEEN (comma-separated structure_id lists from Fixtures/data/si-defects/{train,val,
# test-unseen}.extxyz), EPOCHS=8, EF_EPOCHS=30, FORCE_WEIGHT=100. Re-running skips finished trainings.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
out=${1:-runs/pilot}
TRAIN=${TRAIN:-vacancy-1100,divacancy-1200,int_tetrahedral-1300,int_split110-1400,vacancy-2100}
TEST=${TEST:-vacancy-1101,divacancy-1201,int_tetrahedral-1301,int_split110-1401}
UNSEEN=${UNSEEN:-int_hexagonal-4600}
EPOCHS=${EPOCHS:-8}
EF_EPOCHS=${EF_EPOCHS:-30}
FORCE_WEIGHT=${FORCE_WEIGHT:-100}
export OPENBLAS_NUM_THREADS=1
data=Fixtures/data/si-defects
sel=scripts/experiments/select_frames.py
scripts/setup
bin=$repo/.build/release/relaxft
pre=$repo/Fixtures/models/si-so3krates-pretrained.safetensors
mkdir -p "$out"
# gather IDS OUT FILE...: the frames of those structures (Si only) from the files that exist, in file order.
gather() {
  local ids=$1 dst=$2; shift 2
  : > "$dst"
  for f in "$@"; do
    [ -s "$f" ] || continue
    rm -f "$dst.part"
    # (exit 1: no frame of this file matches)
    python3 $sel "$f" "$dst.part" --keep "structure_id=$ids" --species Si >/dev/null || continue
    cat "$dst.part" >> "$dst"
  done
  rm -f "$dst.part"
}
# pick IDS OUT FILE...: gather, and stop unless every structure was found.
pick() {
  gather "$@"
  local want have
  want=$(tr ',' '\n' <<< "$1" | wc -l)
  have=$(grep -c Lattice= "$2" || true)
  [ "$have" = "$want" ] || { echo "pilot.sh: found $have of the $want structures $1" >&2; exit 2; }
}
pick "$TRAIN" "$out/train.extxyz" $data/train.extxyz $data/val.extxyz $data/test.extxyz
pick "$TEST" "$out/test.extxyz" $data/train.extxyz $data/val.extxyz $data/test.extxyz
pick "$UNSEEN" "$out/unseen.extxyz" $data/test-unseen.extxyz
gather "$TRAIN" "$out/traj-train.extxyz" $data/trajectories-train.extxyz $data/trajectories-val.extxyz $data/trajectories-test.extxyz
echo "== pilot: train $(grep -c Lattice= "$out/train.extxyz") structures ($(grep -c Lattice= "$out/traj-train.extxyz") DFT frames), test $(grep -c Lattice= "$out/test.extxyz"), unseen $(grep -c Lattice= "$out/unseen.extxyz")" >&2

common=(--data "$out/train.extxyz" --val-fraction 0 --relaxer fire --relaxer-param dt=0.1 --grad checkpoint --steps 60
        --epochs "$EPOCHS" --batch 1 --clip 10 --seed 0 --threads 1 --schedule cosine --quiet)
train() {  # train NAME ARGS...
  local name=$1; shift
  [ -s "$out/$name/summary.json" ] && return
  rm -rf "${out:?}/$name"
  echo "== $name" >&2
  "$@" --out "$out/$name" > "$out/$name.log" 2>&1
}
train ef $bin pretrain --potential "$pre" --refit-reference-energies --data "$out/traj-train.extxyz" --val-fraction 0.1 \
  --epochs "$EF_EPOCHS" --lr 3e-4 --batch 4 --schedule cosine --patience 1000 --seed 0
train bptt-fire $bin finetune --potential "$pre" "${common[@]}" --lr 3e-4
train bptt-fire-forces $bin finetune --potential "$pre" "${common[@]}" --lr 3e-4 --force-data "$out/traj-train.extxyz" --force-weight "$FORCE_WEIGHT"
train ef-then-bptt $bin finetune --potential "$out/ef/best.safetensors" "${common[@]}" --lr 1e-4
for split in test unseen; do
  $bin evaluate --potential "$pre" --label pretrained --potential "$out/ef/best.safetensors" --label ef \
    --potential "$out/bptt-fire/best.safetensors" --label bptt-fire --potential "$out/bptt-fire-forces/best.safetensors" --label bptt-fire-forces \
    --potential "$out/ef-then-bptt/best.safetensors" --label ef-then-bptt \
    --data "$out/$split.extxyz" --relaxer fire --fmax 0.01 --steps 500 --threads 1 --csv "$out/eval-$split.csv" > /dev/null
done
python3 - "$out" <<'EOF'
import csv, statistics, sys
out = sys.argv[1]
for split in ('test', 'unseen'):
    lines = open(f'{out}/eval-{split}.csv').read().splitlines()
    labels = dict(p.split('=') for p in next(l for l in lines if l.startswith('# models:')).split(':', 1)[1].split())
    rows = list(csv.DictReader(l for l in lines if not l.startswith('#')))
    keys = sorted(labels, key=int)
    print(f'\n{split}: ΔQ (amu^½·Å), FIRE to 0.01 eV/Å\n')
    print('| structure | ' + ' | '.join(labels[k] for k in keys) + ' |')
    print('|---|' + '---|' * len(keys))
    for r in rows:
        print(f"| {r['structure']} | " + ' | '.join(f"{float(r['dq_' + k]):.3g}" for k in keys) + ' |')
    print('| **mean** | ' + ' | '.join(f"**{statistics.mean(float(r['dq_' + k]) for r in rows):.3g}**" for k in keys) + ' |')
EOF
