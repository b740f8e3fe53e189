#!/usr/bin/env bash
# The experiment of issue 9 in one command: for each pretrained model (SO3krates, SchNet, and CHGNet when pulled),
# on the GPAW Si-defect data in Fixtures/data/si-defects:
#   1. evaluate the pretrained model (relax every test structure, ΔQ to the DFT-relaxed geometry);
#   2. fine-tune through relaxations (BPTT): frame and FIRE relaxers, checkpoint and implicit gradients, one
#      variant that also trains the frame relaxer's step size eta, and one that mixes force matching on the
#      training structures' DFT frames into every step (bptt-fire-forces);
#   3. fine-tune the conventional way: energy/force matching (relaxft pretrain --init) on the DFT relaxation
#      frames of the same training structures (the same data budget: the structures BPTT sees, with every
#      ionic step's energy and forces instead of only the end points); and both in sequence (ef-then-bptt: BPTT
#      starting from the energy/force-matched model, the workflow the BPTT paper proposes);
#   4. evaluate every model on the test split and on the unseen-defect-kind split, under one common protocol
#      (FIRE to EVAL_FMAX) and, for BPTT models, also under their own training protocol; and on the validation
#      split (common protocol; it picked the best epochs, so it is reported apart);
# and write OUT/results.csv (one row per model, method, protocol, split and structure, with the per-structure ΔQ),
# OUT/report.html (figures), and docs/results.md (tables).
#
#   scripts/experiments/reproduce.sh [--quick] [--dataset auto|tiny|large] [--out DIR] [--models "so3krates schnet chgnet"]
#                                    [--train-only | --eval-only]
#
# --train-only: prepare the data and run the trainings, nothing else; the test splits need not exist yet (a later run
# without it evaluates). --eval-only: start no training; evaluate (and tabulate) the models whose trainings exist,
# e.g. after models trained with different budgets by separate runs.
#
# Output: --out DIR (or OUT), by default runs/reproduce for the large splits and runs/reproduce-quick for the tiny set.
# A directory keeps stamps of its data (train-stamp.txt, eval-stamp.txt): it refuses to resume on other training data,
# and evaluates again when only the test data changed.
#
# Data: the full run needs the large splits (train, val, test, test-unseen and trajectories-train .extxyz, 62-65-atom
# cells) and stops with exit 2 naming the missing files otherwise. --quick (and --dataset tiny) uses the
# 12-structure tiny set (8-site cells), split by seed: replicas 0 and 1 of rattled, vacancy and sub_C train,
# replica 2 tests, and int_tetrahedral is the unseen kind. Models that know Si only (the committed SO3krates and
# SchNet) get the Si-only structures. CHGNet is used when pulled (relaxft models pull chgnet-0.3.0).
#
# Settings (environment variables; --quick lowers the defaults in brackets):
#   BPTT_EPOCHS=30 [3]  STEPS=60 [40] (unrolled relaxer steps T)  LR_BPTT=3e-4  ETA=0.05 (frame step, Å²/eV)
#   FIRE_DT=0.1  BATCH=4 (BPTT structures per step)  BPTT_SCHEDULE=constant (or cosine)  EF_EPOCHS=60 [10]  LR_EF=3e-4
#   EF_BATCH=4 (frames per step)  EVAL_FMAX=0.01  EVAL_STEPS=500  SEED=0
#   THREADS=<cores>  RESULTS_MD=docs/results.md ("" to skip)  DATA=Fixtures/data/si-defects (another directory with the
#   same file names: your own defect relaxations)
#   MEMORY_JSON=OUT/memory.json (BENCH_JSON of scripts/bench memory)  SWEEP_CSV=OUT/sweep/sweep.csv (scripts/sweep collect)
#   (both optional: their tables go into RESULTS_MD when the files exist)
#   FORCE_WEIGHT=100 ((eV/Å)⁻², bptt-fire-forces)  LR_EF_BPTT=1e-4 (ef-then-bptt, cosine schedule)
#   METHODS="bptt-frame-ckpt bptt-fire-ckpt bptt-fire-implicit bptt-frame-eta bptt-fire-forces ef ef-then-bptt"
#   (a subset to save time; ef-then-bptt needs ef, which always runs first)
# Re-running resumes: finished trainings and evaluations (their outputs exist) are skipped.
# Cost (measured on one core for the committed SO3krates, 63-atom cells, T = 60, checkpointed): about 7 s per
# training structure and BPTT epoch, the epoch's evaluation relaxations included; energy/force matching about 0.2 s
# per DFT frame and epoch. SchNet costs about half. Budget epochs and METHODS from these before starting the full run.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

quick=0
train_only=0
eval_only=0
dataset=${DATASET:-}
out=${OUT:-}
models=${MODELS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --train-only) train_only=1 ;;
    --eval-only) eval_only=1 ;;
    --dataset) [ $# -ge 2 ] || { echo "reproduce.sh: --dataset needs tiny or large" >&2; exit 2; }; dataset=$2; shift ;;
    --out|--models) [ $# -ge 2 ] || { echo "reproduce.sh: $1 needs a value" >&2; exit 2; } ;;&
    --out) out=$2; shift ;;
    --models) models=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "${QUICK:-0}" = 1 ] && quick=1
if [ $quick = 1 ]; then d_epochs=3; d_steps=40; d_ef=10; else d_epochs=30; d_steps=60; d_ef=60; fi
BPTT_EPOCHS=${BPTT_EPOCHS:-$d_epochs}
STEPS=${STEPS:-$d_steps}
EF_EPOCHS=${EF_EPOCHS:-$d_ef}
FORCE_WEIGHT=${FORCE_WEIGHT:-100}
LR_EF_BPTT=${LR_EF_BPTT:-1e-4}
LR_BPTT=${LR_BPTT:-3e-4}
LR_EF=${LR_EF:-3e-4}
ETA=${ETA:-0.05}
FIRE_DT=${FIRE_DT:-0.1}
BATCH=${BATCH:-4}
EF_BATCH=${EF_BATCH:-4}
BPTT_SCHEDULE=${BPTT_SCHEDULE:-constant}
EVAL_FMAX=${EVAL_FMAX:-0.01}
EVAL_STEPS=${EVAL_STEPS:-500}
SEED=${SEED:-0}
THREADS=${THREADS:-$(nproc)}
RESULTS_MD=${RESULTS_MD-docs/results.md}
MEMORY_JSON=${MEMORY_JSON:-$out/memory.json}
SWEEP_CSV=${SWEEP_CSV:-$out/sweep/sweep.csv}
export OPENBLAS_NUM_THREADS=1

sel=scripts/experiments/select_frames.py
data=${DATA:-Fixtures/data/si-defects}
log() { echo "== $*" >&2; }

# ---- data ----------------------------------------------------------------------------------------------------
[ -n "$dataset" ] || { [ $quick = 1 ] && dataset=tiny || dataset=large; }
# Files the trainings read and files only the evaluation reads (the tiny set holds both in one file).
case $dataset in
  tiny) train_used=($data/tiny.extxyz $data/trajectories-tiny.extxyz); eval_used=("${train_used[@]}") ;;
  large) train_used=($data/train.extxyz $data/val.extxyz $data/trajectories-train.extxyz)
         eval_used=($data/test.extxyz $data/test-unseen.extxyz) ;;
  *) echo "reproduce.sh: --dataset must be tiny or large, not $dataset" >&2; exit 2 ;;
esac
need=("${train_used[@]}")
[ $train_only = 1 ] || need+=("${eval_used[@]}")
missing=()
for f in "${need[@]}"; do [ -s "$f" ] || missing+=("$f"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "reproduce.sh: the $dataset-set run needs ${missing[*]}, which do not exist yet." >&2
  [ "$dataset" = large ] && echo "reproduce.sh: the 64-atom DFT relaxations are still being computed (scripts/dft/start_queue.sh; see $data/README.md for the counts); scripts/experiments/reproduce.sh --quick runs the tiny set meanwhile." >&2
  exit 2
fi
# The tiny set and the large splits run in separate directories by default. A directory remembers the data it
# was trained and evaluated on: resuming on other training data (a tiny-set run, or more DFT structures) is
# refused, so that trainings on other data never mix into one table; new test data only redoes the evaluations.
[ -n "$out" ] || { [ "$dataset" = tiny ] && out=runs/reproduce-quick || out=runs/reproduce; }
[ "$dataset" = large ] && [ -s $data/trajectories-val.extxyz ] && train_used+=($data/trajectories-val.extxyz)
train_stamp="dataset=$dataset training-data=$(cat "${train_used[@]}" | sha256sum | cut -c1-16)"
eval_stamp="dataset=$dataset test-data=$({ cat "${eval_used[@]}" 2>/dev/null || true; } | sha256sum | cut -c1-16)"
refuse() { echo "reproduce.sh: $out holds $1" >&2; echo "reproduce.sh: give a new directory with --out, or remove $out to start over." >&2; exit 2; }
if [ -s "$out/train-stamp.txt" ] && [ "$(cat "$out/train-stamp.txt")" != "$train_stamp" ]; then
  refuse "trainings on other data ($(cat "$out/train-stamp.txt"); now: $train_stamp)."
fi
[ -d "$out/train" ] && [ ! -s "$out/train-stamp.txt" ] && refuse "a run without a data stamp (made by an older reproduce.sh): its data cannot be checked."
mkdir -p "$out"
echo "$train_stamp" > "$out/train-stamp.txt"
if [ $train_only = 0 ]; then
  if [ -s "$out/eval-stamp.txt" ] && [ "$(cat "$out/eval-stamp.txt")" != "$eval_stamp" ]; then
    echo "== the test data changed since the last evaluation: evaluating again" >&2
    rm -rf "$out/eval"
  fi
  echo "$eval_stamp" > "$out/eval-stamp.txt"
fi

scripts/setup
bin=$repo/.build/release/relaxft
mkdir -p "$out"/data "$out"/eval "$out"/train
# split_files SPECIES_TAG SPECIES_FILTER: writes $out/data/<tag>/{train,val,test,unseen,traj-train,traj-val}.extxyz
split_files() {
  local tag=$1 species=$2 d=$out/data/$1
  mkdir -p "$d"
  local sp=()
  [ -n "$species" ] && sp=(--species "$species")
  if [ "$dataset" = large ]; then
    python3 $sel $data/train.extxyz "$d/train.extxyz" "${sp[@]}" >/dev/null
    [ -s $data/val.extxyz ] && python3 $sel $data/val.extxyz "$d/val.extxyz" "${sp[@]}" >/dev/null || true
    [ -s $data/test.extxyz ] && python3 $sel $data/test.extxyz "$d/test.extxyz" "${sp[@]}" >/dev/null || true
    [ -s $data/test-unseen.extxyz ] && python3 $sel $data/test-unseen.extxyz "$d/unseen.extxyz" "${sp[@]}" >/dev/null || true
    # The same structures' ionic steps (converged relaxations only, as BPTT gets).
    local ids
    ids=$(grep -o 'structure_id=[^ ]*' "$d/train.extxyz" | cut -d= -f2 | paste -sd, -)
    python3 $sel $data/trajectories-train.extxyz "$d/traj-train.extxyz" --keep "structure_id=$ids" "${sp[@]}" >/dev/null
    if [ -s "$d/val.extxyz" ]; then
      ids=$(grep -o 'structure_id=[^ ]*' "$d/val.extxyz" | cut -d= -f2 | paste -sd, -)
      python3 $sel $data/trajectories-val.extxyz "$d/traj-val.extxyz" --keep "structure_id=$ids" "${sp[@]}" >/dev/null || true
    fi
  else
    local t=$data/tiny.extxyz tr=$data/trajectories-tiny.extxyz
    python3 $sel $t "$d/train.extxyz" --keep 'seed=*0,*1' --drop defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $t "$d/test.extxyz" --keep 'seed=*2' --drop defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $t "$d/unseen.extxyz" --keep defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $tr "$d/traj-train.extxyz" --keep 'seed=*0,*1' --drop defect=int_tetrahedral --keep converged=T "${sp[@]}" >/dev/null
  fi
}
count() { [ -s "$1" ] && grep -c Lattice= "$1" || echo 0; }
split_files si Si
split_files all ""
if [ "$dataset" = large ]; then
  log "data: the large splits of $data (train $(count $out/data/all/train.extxyz), val $(count $out/data/all/val.extxyz), test $(count $out/data/all/test.extxyz), unseen kind $(count $out/data/all/unseen.extxyz) structures)"
else
  log "data: the TINY set ($data/tiny.extxyz, 8-site cells; the large splits are not computed yet): train $(count $out/data/all/train.extxyz), test $(count $out/data/all/test.extxyz), unseen kind (int_tetrahedral) $(count $out/data/all/unseen.extxyz)"
fi

# ---- models --------------------------------------------------------------------------------------------------
chgnet_file=${RELAXFT_HOME:-$HOME/.cache/relaxft}/models/chgnet-0.3.0.safetensors
if [ -z "$models" ]; then
  models="so3krates schnet"
  [ -f "$chgnet_file" ] && models="$models chgnet"
fi
model_path() {
  case $1 in
    so3krates) echo "$repo/Fixtures/models/si-so3krates-pretrained.safetensors" ;;
    schnet) echo "$repo/Fixtures/models/si-schnet-pretrained.safetensors" ;;
    chgnet) echo "$chgnet_file" ;;
    *) echo "reproduce.sh: unknown model $1" >&2; exit 2 ;;
  esac
}
species_tag() { case $1 in chgnet) echo all ;; *) echo si ;; esac; }
[ -f "$chgnet_file" ] || log "CHGNet not pulled (relaxft models pull chgnet-0.3.0): running without it"

# ---- training ------------------------------------------------------------------------------------------------
all_methods="bptt-frame-ckpt bptt-fire-ckpt bptt-fire-implicit bptt-frame-eta bptt-fire-forces ef ef-then-bptt"
for meth in ${METHODS:-$all_methods}; do
  case " $all_methods " in *" $meth "*) ;; *) echo "reproduce.sh: unknown method $meth in METHODS (known: $all_methods)" >&2; exit 2 ;; esac
done
# In the canonical order, so that ef runs before ef-then-bptt, which starts from its model.
methods=""
for meth in $all_methods; do
  case " ${METHODS:-$all_methods} " in *" $meth "*) methods="$methods $meth" ;; esac
done
bptt_args() {
  case $1 in
    bptt-frame-ckpt) echo "--relaxer frame --relaxer-param eta=$ETA --grad checkpoint --steps $STEPS" ;;
    bptt-fire-ckpt) echo "--relaxer fire --relaxer-param dt=$FIRE_DT --grad checkpoint --steps $STEPS" ;;
    # Implicit differentiation needs the minimum: relax to fmax 1e-6 inside; the stored protocol (used for
    # validation and the own-protocol evaluation) runs FIRE to EVAL_FMAX.
    bptt-fire-implicit) echo "--relaxer fire --relaxer-param dt=$FIRE_DT --grad implicit --steps $EVAL_STEPS --stop-fmax $EVAL_FMAX" ;;
    bptt-frame-eta) echo "--relaxer frame --relaxer-param eta=$ETA --grad checkpoint --steps $STEPS --train-relaxer eta --relaxer-lr 0.01 --relative-lr" ;;
    bptt-fire-forces) echo "--relaxer fire --relaxer-param dt=$FIRE_DT --grad checkpoint --steps $STEPS" ;;  # + the force term (below)
    # A smaller, decaying learning rate: the start is already good, and a pilot at LR_BPTT with the frame
    # relaxer left it within 3 epochs.
    ef-then-bptt) echo "--relaxer fire --relaxer-param dt=$FIRE_DT --grad checkpoint --steps $STEPS --lr $LR_EF_BPTT --schedule cosine" ;;
  esac
}
[ $train_only = 1 ] && [ $eval_only = 1 ] && { echo "reproduce.sh: --train-only and --eval-only exclude each other" >&2; exit 2; }
for m in $models; do
  [ $eval_only = 1 ] && break
  pre=$(model_path $m)
  d=$out/data/$(species_tag $m)
  val=(--val-fraction 0)
  [ -s "$d/val.extxyz" ] && val=(--val "$d/val.extxyz")
  for meth in $methods; do
    run=$out/train/$m-$meth
    [ -s "$run/summary.json" ] && { log "$m $meth: done before, skipped"; continue; }
    log "$m: $meth"
    if [ "$meth" = ef ]; then
      efval=(--val-fraction 0.1)
      [ -s "$d/traj-val.extxyz" ] && efval=(--val "$d/traj-val.extxyz")
      if [ -f "$run/checkpoint.safetensors" ]; then
        $bin pretrain --resume "$run" > "$run.log" 2>&1
      else
        rm -rf "$run"
        # Reference energies refitted: the model was trained on VASP data, these frames are GPAW's (another
        # energy zero); forces are unaffected, and energies enter the loss with weight 0.01 as in pretraining.
        $bin pretrain --potential "$pre" --refit-reference-energies --data "$d/traj-train.extxyz" "${efval[@]}" \
          --epochs "$EF_EPOCHS" --lr "$LR_EF" --batch "$EF_BATCH" --schedule cosine --patience 1000 --seed "$SEED" --out "$run" > "$run.log" 2>&1
      fi
    else
      start=$pre
      extra=()
      [ "$meth" = bptt-fire-forces ] && extra=(--force-data "$d/traj-train.extxyz" --force-weight "$FORCE_WEIGHT")
      if [ "$meth" = ef-then-bptt ]; then
        start=$out/train/$m-ef/best.safetensors
        [ -s "$start" ] || { echo "reproduce.sh: ef-then-bptt needs the ef model $start" >&2; exit 1; }
      fi
      if [ -f "$run/checkpoint.safetensors" ] || [ -f "$run/state.json" ]; then
        $bin finetune --resume "$run" --quiet --json > "$run.log" 2>&1
      else
        rm -rf "$run"
        # bptt_args come last: ef-then-bptt overrides --lr.
        # shellcheck disable=SC2046
        $bin finetune --potential "$start" --data "$d/train.extxyz" "${val[@]}" --epochs "$BPTT_EPOCHS" --lr "$LR_BPTT" \
          --batch "$BATCH" --schedule "$BPTT_SCHEDULE" --clip 10 --seed "$SEED" --threads "$THREADS" $(bptt_args $meth) "${extra[@]}" --out "$run" > "$run.log" 2>&1
      fi
    fi
  done
done

if [ $train_only = 1 ]; then
  log "trainings done ($out/train); --train-only: no evaluation"
  exit 0
fi

# ---- evaluation ----------------------------------------------------------------------------------------------
for m in $models; do
  pre=$(model_path $m)
  d=$out/data/$(species_tag $m)
  for split in test unseen val; do
    [ -s "$d/$split.extxyz" ] || continue
    csv=$out/eval/$m-$split-common.csv
    if [ ! -s "$csv" ]; then
      log "$m: evaluate on $split (FIRE to $EVAL_FMAX eV/Å, ≤ $EVAL_STEPS steps)"
      args=(--potential "$pre" --label pretrained)
      for meth in $methods; do
        [ -s "$out/train/$m-$meth/best.safetensors" ] && args+=(--potential "$out/train/$m-$meth/best.safetensors" --label "$meth")
      done
      $bin evaluate "${args[@]}" --data "$d/$split.extxyz" --relaxer fire --fmax "$EVAL_FMAX" --steps "$EVAL_STEPS" \
        --threads "$THREADS" -o "$csv.tmp" --json > "$out/eval/$m-$split-common.json"
      mv "$csv.tmp" "$csv"
    fi
    # The validation split picked the best epochs: common protocol only, reported apart from the held-out splits.
    [ "$split" = val ] && continue
    # BPTT models under the relaxation they were trained with (the pretrained model under the same one).
    for meth in $methods; do
      case $meth in ef|bptt-fire-implicit) continue ;; esac  # no own unrolled protocol: the common one is theirs
      best=$out/train/$m-$meth/best.safetensors
      csv=$out/eval/$m-$split-own-$meth.csv
      [ -s "$best" ] && [ ! -s "$csv" ] || continue
      $bin evaluate --potential "$pre" --label pretrained --potential "$best" --label "$meth" --data "$d/$split.extxyz" \
        --protocol "$best" --threads "$THREADS" -o "$csv.tmp" --json > "$out/eval/$m-$split-own-$meth.json"
      mv "$csv.tmp" "$csv"
    done
  done
done

# ---- results -------------------------------------------------------------------------------------------------
settings="dataset=$dataset data=$data quick=$quick BPTT_EPOCHS=$BPTT_EPOCHS STEPS=$STEPS LR_BPTT=$LR_BPTT ETA=$ETA FIRE_DT=$FIRE_DT BATCH=$BATCH BPTT_SCHEDULE=$BPTT_SCHEDULE EF_BATCH=$EF_BATCH EF_EPOCHS=$EF_EPOCHS LR_EF=$LR_EF FORCE_WEIGHT=$FORCE_WEIGHT LR_EF_BPTT=$LR_EF_BPTT EVAL_FMAX=$EVAL_FMAX EVAL_STEPS=$EVAL_STEPS SEED=$SEED"
python3 scripts/experiments/results.py "$out"
# Everything in one HTML file (training curves of every run too), and the figures for the Markdown document.
$bin report "$out/results.csv" "$out"/eval/*-common.csv "$out"/train/*/ -o "$out/report.html" \
  --title "relaxft: BPTT vs energy/force fine-tuning ($dataset set)" >&2
if [ -n "$RESULTS_MD" ]; then
  figs=$(dirname "$RESULTS_MD")/figures/results
  rm -rf "$figs"
  $bin report "$out/results.csv" "$out"/eval/*-test-common.csv -o "$out/report-docs.html" --svg-dir "$figs" \
    --title "relaxft: BPTT vs energy/force fine-tuning ($dataset set)" >&2
  extra=()
  [ -s "$MEMORY_JSON" ] && extra+=(--memory "$MEMORY_JSON")
  [ -s "$SWEEP_CSV" ] && extra+=(--sweep "$SWEEP_CSV")
  python3 scripts/experiments/results.py "$out" --settings "$settings" --models "$models" --markdown "$RESULTS_MD" --figures "$figs" "${extra[@]}"
fi
log "done: $out/results.csv, $out/report.html${RESULTS_MD:+, $RESULTS_MD}"
