#!/usr/bin/env bash
# The fine-tuning experiment at full size (issue 27), resumable across sessions. For each pretrained model
# (SO3krates and SchNet from Fixtures/models, Si-only, on the Si-only structures; CHGNet 0.3.0 when pulled, on all)
# on the GPAW Si-defect data in Fixtures/data/si-defects (train 40, validation 10, test 10, unseen kind 4):
#   pretrained     the model as it is;
#   bptt           BPTT through STEPS FIRE steps, checkpointed gradients;
#   implicit       implicit differentiation at the FIRE minimum;
#   guided         guided gradients: a recorded GUIDED_K-step FIRE window, then the implicit gradient at the minimum
#                  the same relaxation reaches (loss GUIDED_W·ΔQ(x_K) + (1 − GUIDED_W)·ΔQ(x*));
#   ef             energy/force matching on the DFT relaxation frames of the training structures;
#   ef-then-bptt   BPTT (as bptt, LR_EF_BPTT, cosine) starting from that seed's ef model;
# every fine-tuning method with each seed of SEEDS (batch order), model selection on the validation split only;
# then every model relaxed with one protocol (FIRE to EVAL_FMAX eV/Å, at most EVAL_STEPS steps) on the test, the
# unseen-kind and the validation split. Results: OUT/results.csv (per structure) and OUT/results.md; with --report
# also docs/results.md (RESULTS_MD) and its figures. Partial results are rendered and marked as partial.
#
#   scripts/experiments/reproduce.sh [--models "so3krates schnet"] [--methods "…"] [--seeds "0 1 2"] [--out DIR]
#                                    [--record DIR] [--quick] [--report] [--status]
#
# Start or continue (both are the same command; a re-run skips what is finished and resumes what was interrupted):
#
#   nice -n 15 env THREADS=1 scripts/experiments/reproduce.sh --models "so3krates schnet" > runs/full.log 2>&1 &
#
# CHGNet later, with its own budget (stored at its first start in OUT/settings/chgnet.env; the other models'
# runs and settings are untouched):
#
#   nice -n 15 env THREADS=2 BPTT_EPOCHS=4 EF_EPOCHS=10 scripts/experiments/reproduce.sh --models chgnet > runs/full-chgnet.log 2>&1 &
#
# SevenNet-0 (relaxft models pull sevennet-0) the same way; pretrained and BPTT at least:
#
#   nice -n 15 env THREADS=2 BPTT_EPOCHS=4 scripts/experiments/reproduce.sh --models sevennet --methods bptt > runs/full-sevennet.log 2>&1 &
#
# On another machine, first `scripts/experiments/record.sh restore`: the committed record (docs/results-record) of
# what finished elsewhere goes back into OUT, and the run goes on from there (`record.sh save` before leaving a
# machine; a recorded EF training whose weights an EF → BPTT training needs is retrained, same command and seed).
# --record DIR (or RECORD=DIR): `record.sh save` into DIR after every finished training and its evaluation.
#
# --status: what is done, running and missing, then exit. --report: render docs/results.md from what exists (no
# training). --quick: the 12-structure tiny set (8-site cells) in minutes, into runs/reproduce-quick.
#
# Settings (environment; stored per model at its first start in OUT/settings/<model>.env and reused on every later
# run, whatever the environment says; the evaluation protocol in OUT/settings/common.env is shared by all models):
#   BPTT_EPOCHS=8  STEPS=60 (unrolled FIRE steps T)  FIRE_DT=0.1  LR_BPTT=3e-4  BATCH=1  BPTT_SCHEDULE=cosine
#   GUIDED_K=20  GUIDED_W=0.5  EF_EPOCHS=20  LR_EF=3e-4  EF_BATCH=4  LR_EF_BPTT=1e-4
#   EVAL_FMAX=0.01  EVAL_STEPS=500 (common.env)
# Not stored (they change no result): THREADS=<cores> (structures relaxed in parallel), SEEDS="0 1 2",
# METHODS="bptt implicit guided ef ef-then-bptt", DATA=Fixtures/data/si-defects, RESULTS_MD=docs/results.md,
# MEMORY_JSON=OUT/memory.json (BENCH_JSON of `BENCH_T=60 scripts/bench memory`; its table goes into the results).
#
# Order: every model's pretrained evaluation, then seed by seed (all methods of seed 0 first), each training
# evaluated as soon as it ends, so an interrupted run has complete rows for what it finished.
# Layout of OUT (default runs/reproduce): data/<si|all>/ (split files), train/<model>-<method>-s<seed>/ (run
# directories: config.json, metrics.csv, best.safetensors, summary.json with CPU time and peak memory),
# eval/<model>/<split>/<label>.{csv,json,time} (label: pretrained or <method>-s<seed>), bin/<model>/ (the relaxft
# binary the model's runs use, copied from the build at its first start, and its commit), driver.log, failed.txt.
# Budget. Measured on the shared 2-core machine (one thread; CPU seconds per training structure and epoch, 63-atom
# cells, validation relaxations included): SO3krates bptt ≈ 5, implicit ≈ 8, guided ≈ 9, energy/force matching
# ≈ 0.055 per DFT frame; SchNet ≈ 2.4, 2.8, 3.4 and 0.025. The defaults (8 BPTT epochs, 20 EF epochs, 3 seeds, 32
# Si-only training structures, 823 frames) come to ≈ 6.6 CPU hours for SO3krates and ≈ 2.8 for SchNet, plus well
# under an hour of evaluations; peak memory ≈ 0.75 GB (SO3krates, checkpointed BPTT).
# The whole script is one brace group, read in full before it runs: editing the file while a run is under way
# (it lasts days) cannot change what that run executes.
{
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

quick=0
report_only=0
status_only=0
out=${OUT:-}
record=${RECORD:-}
models=${MODELS:-}
methods_arg=${METHODS:-}
seeds=${SEEDS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --report) report_only=1 ;;
    --status) status_only=1 ;;
    --out|--models|--methods|--seeds|--record) [ $# -ge 2 ] || { echo "reproduce.sh: $1 needs a value" >&2; exit 2; } ;;&
    --out) out=$2; shift ;;
    --record) record=$2; shift ;;
    --models) models=$2; shift ;;
    --methods) methods_arg=$2; shift ;;
    --seeds) seeds=$2; shift ;;
    -h|--help) sed -n '2,/^# The whole script/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "reproduce.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || { [ $quick = 1 ] && out=runs/reproduce-quick || out=runs/reproduce; }
[ -n "$models" ] || models="so3krates schnet"
[ -n "$seeds" ] || seeds="0 1 2"
all_methods="bptt implicit guided ef ef-then-bptt"
[ -n "$methods_arg" ] || methods_arg=$all_methods
for meth in $methods_arg; do
  case " $all_methods " in *" $meth "*) ;; *) echo "reproduce.sh: unknown method $meth (known: $all_methods)" >&2; exit 2 ;; esac
done
# The canonical order: ef before ef-then-bptt, which starts from its model.
methods=""
for meth in $all_methods; do case " $methods_arg " in *" $meth "*) methods="$methods $meth" ;; esac; done
for m in $models; do
  case $m in so3krates|schnet|chgnet|sevennet) ;; *) echo "reproduce.sh: unknown model $m (so3krates, schnet, chgnet, sevennet)" >&2; exit 2 ;; esac
done
for s in $seeds; do [[ $s =~ ^[0-9]+$ ]] || { echo "reproduce.sh: seeds must be non-negative integers, got '$s'" >&2; exit 2; }; done
THREADS=${THREADS:-$(nproc)}
if [ $quick = 1 ]; then RESULTS_MD=${RESULTS_MD-}; else RESULTS_MD=${RESULTS_MD-docs/results.md}; fi
MEMORY_JSON=${MEMORY_JSON:-$out/memory.json}
data=${DATA:-Fixtures/data/si-defects}
export OPENBLAS_NUM_THREADS=1
sel=scripts/experiments/select_frames.py
log() { echo "== $(date '+%F %T') $*" | tee -a "$out/driver.log" >&2; }
mkdir -p "$out"/settings "$out"/train "$out"/eval "$out"/data

# ---- settings: stored at a model's first start, reused afterwards -----------------------------------------------
model_keys="BPTT_EPOCHS STEPS FIRE_DT LR_BPTT BATCH BPTT_SCHEDULE GUIDED_K GUIDED_W EF_EPOCHS LR_EF EF_BATCH LR_EF_BPTT"
common_keys="EVAL_FMAX EVAL_STEPS"
if [ $quick = 1 ]; then defaults="BPTT_EPOCHS=2 STEPS=30 GUIDED_K=8 EF_EPOCHS=4"; else defaults=""; fi
default_of() {
  local k=$1 kv
  for kv in $defaults; do [ "${kv%%=*}" = "$k" ] && { echo "${kv#*=}"; return; }; done
  case $k in
    BPTT_EPOCHS) echo 8 ;; STEPS) echo 60 ;; FIRE_DT) echo 0.1 ;; LR_BPTT) echo 3e-4 ;; BATCH) echo 1 ;; BPTT_SCHEDULE) echo cosine ;;
    GUIDED_K) echo 20 ;; GUIDED_W) echo 0.5 ;; EF_EPOCHS) echo 20 ;; LR_EF) echo 3e-4 ;; EF_BATCH) echo 4 ;; LR_EF_BPTT) echo 1e-4 ;;
    EVAL_FMAX) echo 0.01 ;; EVAL_STEPS) echo 500 ;;
  esac
}
# settings_file FILE KEYS: writes FILE from the environment (or the defaults) unless it exists; prints what differs.
settings_file() {
  local f=$1 k v; shift
  if [ ! -s "$f" ]; then
    for k in "$@"; do v=${!k:-$(default_of "$k")}; echo "$k=$v"; done > "$f.tmp" && mv "$f.tmp" "$f"
  else
    for k in "$@"; do
      v=$(grep "^$k=" "$f" | cut -d= -f2-)
      [ -n "${!k:-}" ] && [ "${!k}" != "$v" ] && echo "reproduce.sh: $k=${!k} ignored: $f (stored at the first start) says $k=$v" >&2
    done
  fi
  return 0
}
# load_settings FILE: the stored values into shell variables of the same names.
load_settings() { local line; while IFS= read -r line; do [ -n "$line" ] && printf -v "${line%%=*}" '%s' "${line#*=}"; done < "$1"; }
settings_file "$out/settings/common.env" $common_keys
load_settings "$out/settings/common.env"

# ---- data ----------------------------------------------------------------------------------------------------
if [ $quick = 1 ]; then dataset=tiny; else dataset=large; fi
case $dataset in
  tiny) train_used=($data/tiny.extxyz $data/trajectories-tiny.extxyz); eval_used=("${train_used[@]}") ;;
  large) train_used=($data/train.extxyz $data/val.extxyz $data/trajectories-train.extxyz $data/trajectories-val.extxyz)
         eval_used=($data/test.extxyz $data/test-unseen.extxyz) ;;
esac
missing=()
for f in "${train_used[@]}" "${eval_used[@]}"; do [ -s "$f" ] || missing+=("$f"); done
if [ ${#missing[@]} -gt 0 ]; then echo "reproduce.sh: the $dataset-set run needs ${missing[*]}" >&2; exit 2; fi
# A directory remembers its data: trainings on other data never mix into one table.
stamp="dataset=$dataset data=$(cat "${train_used[@]}" "${eval_used[@]}" | sha256sum | cut -c1-16)"
if [ -s "$out/data-stamp.txt" ] && [ "$(cat "$out/data-stamp.txt")" != "$stamp" ]; then
  echo "reproduce.sh: $out holds runs on other data ($(cat "$out/data-stamp.txt"); now: $stamp)." >&2
  echo "reproduce.sh: give a new directory with --out, or remove $out to start over." >&2
  exit 2
fi
echo "$stamp" > "$out/data-stamp.txt"

# split_files TAG SPECIES: $out/data/<tag>/{train,val,test,unseen,traj-train,traj-val}.extxyz (once).
split_files() {
  local tag=$1 species=$2 d=$out/data/$1 sp=() ids
  [ -s "$d/done" ] && return 0
  mkdir -p "$d"
  [ -n "$species" ] && sp=(--species "$species")
  if [ "$dataset" = large ]; then
    python3 $sel $data/train.extxyz "$d/train.extxyz" "${sp[@]}" >/dev/null
    python3 $sel $data/val.extxyz "$d/val.extxyz" "${sp[@]}" >/dev/null
    python3 $sel $data/test.extxyz "$d/test.extxyz" "${sp[@]}" >/dev/null
    python3 $sel $data/test-unseen.extxyz "$d/unseen.extxyz" "${sp[@]}" >/dev/null
    for s in train val; do
      ids=$(grep -o 'structure_id=[^ ]*' "$d/$s.extxyz" | cut -d= -f2 | paste -sd, -)
      python3 $sel $data/trajectories-$s.extxyz "$d/traj-$s.extxyz" --keep "structure_id=$ids" "${sp[@]}" >/dev/null
    done
  else
    local t=$data/tiny.extxyz tr=$data/trajectories-tiny.extxyz
    python3 $sel $t "$d/train.extxyz" --keep 'seed=*0' --drop defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $t "$d/val.extxyz" --keep 'seed=*1' --drop defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $t "$d/test.extxyz" --keep 'seed=*2' --drop defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $t "$d/unseen.extxyz" --keep defect=int_tetrahedral "${sp[@]}" >/dev/null
    python3 $sel $tr "$d/traj-train.extxyz" --keep 'seed=*0' --drop defect=int_tetrahedral --keep converged=T "${sp[@]}" >/dev/null
    python3 $sel $tr "$d/traj-val.extxyz" --keep 'seed=*1' --drop defect=int_tetrahedral --keep converged=T "${sp[@]}" >/dev/null
  fi
  echo ok > "$d/done"
}
split_files si Si
split_files all ""

# Relative paths and model-store names: they are recorded in run directories and model files.
store=${RELAXFT_HOME:-$HOME/.cache/relaxft}/models
model_path() {
  case $1 in
    so3krates) echo "Fixtures/models/si-so3krates-pretrained.safetensors" ;;
    schnet) echo "Fixtures/models/si-schnet-pretrained.safetensors" ;;
    chgnet) echo "chgnet-0.3.0" ;;
    sevennet) echo "sevennet-0" ;;
  esac
}
# Universal models (pulled into the store) see every structure; the in-house models know silicon only.
pulled() { case $1 in chgnet|sevennet) return 0 ;; *) return 1 ;; esac; }
species_tag() { if pulled "$1"; then echo all; else echo si; fi; }

# The plan (for the results' partial marking): the three models of the full run (CHGNet starts later) and any other
# model started here, the methods and seeds of this invocation.
write_plan() {
  local planned
  planned=$( { [ "$dataset" = large ] && printf '%s\n' so3krates schnet chgnet; ls "$out/settings" | sed -n 's/\.env$//p' | grep -v '^common$'; } | sort -u | paste -sd' ' -) || true
  printf '{"models": "%s", "methods": "%s", "seeds": "%s", "dataset": "%s", "data": "%s"}\n' \
    "$planned" "$(echo $methods)" "$(echo $seeds)" "$dataset" "$data" > "$out/plan.json"
}

run_dir() { echo "$out/train/$1-$2-s$3"; }
label_of() { [ "$2" = pretrained ] && echo pretrained || echo "$2-s$3"; }
model_file_of() { [ "$2" = pretrained ] && model_path "$1" || echo "$(run_dir "$1" "$2" "$3")/best.safetensors"; }

status() {
  local m meth s r n_done=0 n_all=0 state
  for m in $models; do
    for s in $seeds; do
      for meth in $methods; do
        r=$(run_dir $m $meth $s); n_all=$((n_all + 1))
        if [ -s "$r/summary.json" ]; then state=done; n_done=$((n_done + 1))
        elif [ -f "$r/checkpoint.safetensors" ]; then state="interrupted after epoch $(($(wc -l 2>/dev/null < "$r/metrics.csv" || echo 1) - 1))"
        else state="not started"; fi
        grep -qx "$m-$meth-s$s" "$out/failed.txt" 2>/dev/null && state="$state, FAILED (see $r.log)"
        echo "$m $meth seed $s: $state"
      done
    done
  done
  echo "$n_done of $n_all trainings done; evaluations: $(find "$out/eval" -name '*.csv' | wc -l)"
}
if [ $status_only = 1 ]; then
  if [ -s "$out/driver.pid" ] && kill -0 "$(cat "$out/driver.pid")" 2>/dev/null; then echo "running (process $(cat "$out/driver.pid"))"; else echo "not running"; fi
  status
  exit 0
fi

built=$repo/.build/release/relaxft
# Each model's runs use the relaxft it started with (copied into OUT/bin/<model>/ with its commit), so that resumed
# trainings continue bit for bit and later builds of the checkout never mix into a model's results; the checkout is
# built only when a model starts.
model_bin() {
  local d=$out/bin/$1
  if [ ! -x "$d/relaxft" ]; then
    scripts/setup >/dev/null
    mkdir -p "$d"
    cp "$built" "$d/relaxft.tmp" && mv "$d/relaxft.tmp" "$d/relaxft"
    { git rev-parse --short HEAD; git status --porcelain --untracked-files=no | grep -q . && echo "with uncommitted changes"; } 2>/dev/null | paste -sd' ' - > "$d/commit.txt" || true
  fi
  echo "$d/relaxft"
}

render() {  # render [docs]: OUT/results.md always; docs/results.md with its figures when asked
  write_plan
  local extra=() md=$out/results.md figs=$out/figures b
  # Figures with a model's relaxft when there is one (no build needed), else the checkout's.
  for b in "$out"/bin/*/relaxft ""; do [ -x "$b" ] && break; done
  [ -n "$b" ] || { scripts/setup >/dev/null; b=$built; }
  [ -s "$MEMORY_JSON" ] && extra+=(--memory "$MEMORY_JSON")
  python3 scripts/experiments/results.py "$out" "${extra[@]}" --markdown "$md" --figures "$figs" --binary "$b" || return 0
  if [ "${1:-}" = docs ] && [ -n "$RESULTS_MD" ]; then
    figs=$(dirname "$RESULTS_MD")/figures/results
    python3 scripts/experiments/results.py "$out" "${extra[@]}" --markdown "$RESULTS_MD" --figures "$figs" --binary "$b" || true
  fi
}
if [ $report_only = 1 ]; then render docs; exit 0; fi

# ---- one training, one evaluation -------------------------------------------------------------------------------
failed() { log "FAILED: $1 (log: $2)"; grep -qx "$1" "$out/failed.txt" 2>/dev/null || echo "$1" >> "$out/failed.txt"; }

# ef_train DIR: energy/force matching of model $m, seed $s (the caller's) into DIR, log DIR.log.
ef_train() {
  local efval=(--val-fraction 0.1)
  [ -s "$d/traj-val.extxyz" ] && efval=(--val "$d/traj-val.extxyz")
  # Reference energies refitted: the models were trained on VASP data, these frames are GPAW's (another
  # energy zero); forces are unaffected, and energies enter the loss with weight 0.01 as in pretraining.
  $bin pretrain --init "$pre" --refit-reference-energies --data "$d/traj-train.extxyz" "${efval[@]}" --epochs "$EF_EPOCHS" \
    --lr "$LR_EF" --batch "$EF_BATCH" --schedule cosine --patience 1000 --seed "$s" --out "$1" > "$1.log" 2>&1
}

train() {  # train MODEL METHOD SEED; returns 0 when the run is finished
  local m=$1 meth=$2 s=$3 r d pre val start bin
  r=$(run_dir $m $meth $s); d=$out/data/$(species_tag $m); pre=$(model_path $m); bin=$(model_bin $m)
  [ -s "$r/summary.json" ] && return 0
  if [ "$meth" = ef ]; then
    if [ -f "$r/checkpoint.safetensors" ]; then
      log "$m $meth seed $s: resuming"
      $bin pretrain --resume "$r" > "$r.log" 2>&1 || { failed "$m-$meth-s$s" "$r.log"; return 1; }
    else
      rm -rf "$r"; log "$m $meth seed $s: starting"
      ef_train "$r" || { failed "$m-$meth-s$s" "$r.log"; return 1; }
    fi
  else
    if [ -f "$r/checkpoint.safetensors" ]; then
      log "$m $meth seed $s: resuming"
      $bin finetune --resume "$r" --threads "$THREADS" --quiet --json > "$r.log" 2>&1 || { failed "$m-$meth-s$s" "$r.log"; return 1; }
    else
      start=$pre
      local args=(--relaxer fire --relaxer-param "dt=$FIRE_DT" --lr "$LR_BPTT" --schedule "$BPTT_SCHEDULE")
      case $meth in
        bptt) args+=(--grad checkpoint --steps "$STEPS") ;;
        # Implicit and guided relax to fmax 1e-6 inside; their stored protocol (validation, model metadata) is
        # the evaluation's: FIRE to EVAL_FMAX.
        implicit) args+=(--grad implicit --steps "$EVAL_STEPS" --stop-fmax "$EVAL_FMAX") ;;
        guided) args+=(--grad "guided:$GUIDED_K:$GUIDED_W" --steps "$EVAL_STEPS" --stop-fmax "$EVAL_FMAX") ;;
        ef-then-bptt)
          start=$(run_dir $m ef $s)/best.safetensors
          [ -s "$(run_dir $m ef $s)/summary.json" ] || { log "$m $meth seed $s: waits for ef seed $s"; return 1; }
          # A recorded EF training (record.sh restore) has no weights: the same command and seed again.
          if [ ! -s "$start" ]; then
            local regen=$(run_dir $m ef $s).regen
            log "$m $meth seed $s: retraining the recorded ef seed $s for its weights"
            rm -rf "$regen"
            ef_train "$regen" || { failed "$m-ef-s$s-regen" "$regen.log"; return 1; }
            cp "$regen/best.safetensors" "$start.tmp" && mv "$start.tmp" "$start" && rm -rf "$regen" "$regen.log"
          fi
          # A smaller, decaying rate: the start is already good.
          args=(--relaxer fire --relaxer-param "dt=$FIRE_DT" --grad checkpoint --steps "$STEPS" --lr "$LR_EF_BPTT" --schedule cosine) ;;
      esac
      rm -rf "$r"; log "$m $meth seed $s: starting"
      $bin finetune --pretrained "$start" --data "$d/train.extxyz" --val "$d/val.extxyz" --epochs "$BPTT_EPOCHS" --batch "$BATCH" \
        --clip 10 --seed "$s" --threads "$THREADS" "${args[@]}" --out "$r" --quiet --json > "$r.log" 2>&1 || { failed "$m-$meth-s$s" "$r.log"; return 1; }
    fi
  fi
  sed -i "/^$m-$meth-s$s\$/d" "$out/failed.txt" 2>/dev/null || true
  log "$m $meth seed $s: done"
}

evaluate() {  # evaluate MODEL METHOD SEED: the common protocol on every split, each written atomically
  local m=$1 meth=$2 s=$3 file label split d e timing=() bin
  file=$(model_file_of $m $meth $s); label=$(label_of $m $meth $s); d=$out/data/$(species_tag $m); bin=$(model_bin $m)
  [ "$meth" = pretrained ] || [ -s "$file" ] || return 0
  for split in test unseen val; do
    [ -s "$d/$split.extxyz" ] || continue
    e=$out/eval/$m/$split; mkdir -p "$e"
    [ -s "$e/$label.csv" ] && continue
    log "$m $label: evaluating on $split"
    [ -x /usr/bin/time ] && timing=(/usr/bin/time -o "$e/$label.time" -f "cpu_seconds=%U+%S max_rss_kb=%M wall_seconds=%e")
    if "${timing[@]}" $bin evaluate --model "$file" --label "$label" --data "$d/$split.extxyz" --relaxer fire --fmax "$EVAL_FMAX" \
         --steps "$EVAL_STEPS" --threads "$THREADS" --csv "$e/$label.csv.tmp" --json > "$e/$label.json.tmp" 2> "$e/$label.err"; then
      mv "$e/$label.json.tmp" "$e/$label.json"; mv "$e/$label.csv.tmp" "$e/$label.csv"
    else
      failed "eval-$m-$label-$split" "$e/$label.err"
    fi
  done
}

# ---- the run --------------------------------------------------------------------------------------------------
for m in $models; do
  pre=$(model_path $m)
  pulled $m && pre=$store/$pre.safetensors
  [ -s "$pre" ] || { echo "reproduce.sh: $m needs $pre$(pulled $m && echo " (relaxft models pull $(model_path $m))")" >&2; exit 2; }
  [ -s "$out/settings/$m.env" ] || log "$m: first start; settings stored in $out/settings/$m.env"
  settings_file "$out/settings/$m.env" $model_keys
done
write_plan
echo $$ > "$out/driver.pid"
log "start: models '$models', methods '$(echo $methods)', seeds '$seeds', $THREADS thread(s), out $out"
# keep_record: with --record, what finished goes into the record at once (record.sh save), so that it is in the
# checkout even when the machine goes before anyone saves it.
keep_record() { [ -z "$record" ] || scripts/experiments/record.sh save --out "$out" --record "$record" >/dev/null || log "record.sh save failed"; }
for m in $models; do evaluate $m pretrained 0; done
keep_record
for s in $seeds; do
  for m in $models; do
    load_settings "$out/settings/$m.env"
    for meth in $methods; do
      if train $m $meth $s; then evaluate $m $meth $s; keep_record; fi
    done
  done
  render
done
# docs/results.md when everything planned here is finished (--report renders it from a partial run).
if status | tail -1 | grep -q '^\([0-9]*\) of \1 trainings done'; then render docs; fi
status | tail -1 | sed 's/^/== /' >&2
log "finished this pass: $out/results.md$([ -n "$RESULTS_MD" ] && [ -s "$RESULTS_MD" ] && echo ", $RESULTS_MD")"
exit 0
}
