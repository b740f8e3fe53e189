#!/usr/bin/env bash
# Known-truth recovery for StABlE training (issue: simulation-based training). The reference RDF comes from
# long MD of liquid silicon with the published Stillinger-Weber parameters (sigma 2.0951 Å, lambda 21) at
# 2500 K; the model is SW with sigma and lambda perturbed; StABlE (Boltzmann estimator on the RDF, no
# energy/force term) trains sigma and lambda. The RDF errors before and after are measured with long MD of
# each model against the reference, beside the error between two independent reference runs (noise floor).
#
# usage: scripts/experiments/stable_sw.sh [OUT_DIR] [EPOCHS]     (about 15-20 min on one core)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/stable-sw}
EPOCHS=${2:-80}
SIGMA0=${SIGMA0:-2.16}
LAMBDA0=${LAMBDA0:-18}
T=2500
export OPENBLAS_NUM_THREADS=1
swift build -c release --product relaxft 2>&1 | grep -E 'error' >&2 || true
R=$PWD/.build/release/relaxft
mkdir -p "$OUT"
cd "$OUT"

MD="--bond-threshold 100 --min-distance 1.5 --quiet"
# 64-atom diamond cell (a = 5.431 Å), melted at 4000 K: the liquid start of every run. Steps whose output
# exists are skipped (delete OUT_DIR to start over).
if [ ! -f liquid64.extxyz ]; then
python3 - > si64.extxyz <<'PY'
a = 5.431
basis = [(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0), (.25, .25, .25), (.25, .75, .75), (.75, .25, .75), (.75, .75, .25)]
pos = [((i + x) * a, (j + y) * a, (k + z) * a) for i in range(2) for j in range(2) for k in range(2) for x, y, z in basis]
L = 2 * a
print(len(pos))
print(f'Lattice="{L} 0.0 0.0 0.0 {L} 0.0 0.0 0.0 {L}" Properties=species:S:1:pos:R:3 pbc="T T T"')
for p in pos:
    print("Si %.10f %.10f %.10f" % p)
PY
$R md si64.extxyz --temperature 4000 --steps 3000 --interval 3000 -o melt.extxyz $MD
$R convert melt.extxyz liquid64.extxyz --frames -1 >/dev/null
fi

# Reference (published SW) and a second independent run of it (noise floor); the perturbed model before training.
RDF="--temperature $T --steps 8000 --equilibrate 1000 --interval 50 --replicas 4 $MD"
[ -f rdf_reference.csv ] || $R md liquid64.extxyz --potential sw --seed 1 --rdf rdf_reference.csv $RDF
[ -f rdf_reference_seed2.csv ] || $R md liquid64.extxyz --potential sw --seed 2 --rdf rdf_reference_seed2.csv $RDF
[ -f rdf_before.csv ] || $R md liquid64.extxyz --potential "sw:sigma=$SIGMA0,lambda=$LAMBDA0" --seed 3 --rdf rdf_before.csv $RDF

rm -rf run
$R stable --potential "sw:sigma=$SIGMA0,lambda=$LAMBDA0" --train-params sigma,lambda --lambda 0 \
  --reference-observable rdf_reference.csv --structure liquid64.extxyz --temperature $T \
  --replicas 4 --steps 500 --sample-interval 25 --discard 100 --equilibrate 500 --restart continue \
  --unstable-fraction 0 --bond-threshold 100 --min-distance 1.5 --lr 0.01 --monitor loss \
  --plateau-patience 10 --max-reductions 20 --epochs "$EPOCHS" --out run | tee stable.log

$R md liquid64.extxyz --potential run/last.safetensors --seed 3 --rdf rdf_after.csv $RDF

python3 - <<'PY'
import csv, json
def g(path):
    rows = list(csv.reader(open(path)))[1:]
    return [float(r[1]) for r in rows]
ref, floor, before, after = (g(f) for f in ["rdf_reference.csv", "rdf_reference_seed2.csv", "rdf_before.csv", "rdf_after.csv"])
mae = lambda a, b: sum(abs(x - y) for x, y in zip(a, b)) / len(a)
s = json.load(open("run/summary.json"))
out = {
    "rdf_mae_before": mae(before, ref), "rdf_mae_after": mae(after, ref), "rdf_mae_noise_floor": mae(floor, ref),
    "reduction_percent": 100 * (1 - mae(after, ref) / mae(before, ref)),
    "true_parameters": {"sigma": 2.0951, "lambda": 21.0},
    "initial_parameters": s.get("initial_parameters"), "last_parameters": s.get("last_parameters"),
}
json.dump(out, open("recovery.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
