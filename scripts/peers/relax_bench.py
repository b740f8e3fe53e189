#!/usr/bin/env python3
"""ASE relaxation throughput on the peers' fixtures, for scripts/bench's ratios.

Runs ASE FIRE and BFGS with the peers' numpy Stillinger-Weber calculator for a fixed number of steps and
prints one JSON object per run (tool, relaxer, atoms, steps, seconds, steps_per_s).
Usage: python relax_bench.py --peers DIR [--sizes 2,3,4] [--steps 100]   (needs ase, numpy)
"""
import argparse
import json
import pathlib
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--peers", required=True)
ap.add_argument("--sizes", default="2,3,4")
ap.add_argument("--steps", type=int, default=100)
args = ap.parse_args()
sys.path.insert(0, args.peers)
from ase.io import read  # noqa: E402
from ase.optimize import BFGS, FIRE  # noqa: E402
from potentials import StillingerWeber  # noqa: E402

for n in [int(s) for s in args.sizes.split(",")]:
    for name in ("fire", "bfgs"):
        atoms = read(pathlib.Path(args.peers) / "fixtures" / f"si_diamond_{n}x{n}x{n}_vac.extxyz")
        atoms.calc = StillingerWeber()
        atoms.get_forces()
        opt = FIRE(atoms, logfile=None) if name == "fire" else BFGS(atoms, logfile=None)
        steps = args.steps if name == "fire" else min(args.steps, 40)
        t0 = time.perf_counter()
        opt.run(fmax=1e-12, steps=steps)
        dt = time.perf_counter() - t0
        print(json.dumps({"tool": "ase", "relaxer": name, "atoms": len(atoms), "steps": opt.nsteps,
                          "seconds": dt, "steps_per_s": opt.nsteps / dt}), flush=True)
