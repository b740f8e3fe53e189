#!/usr/bin/env python3
"""Times the real chgnet package (CHGNet 0.3.0, PyTorch eager, one CPU thread) on the structures of
`scripts/bench chgnet`, for comparison with relaxft's port. Prints one JSON object per line.

    $RELAXFT_PEERS_PYTHON scripts/peers/chgnet_bench.py [--sizes 2 3] [--dtype float32|float64]

Needs torch and chgnet (`pip install chgnet==0.4.2`) in that Python. Structures: diamond Si, a = 5.431 Å,
2×2×2 and 3×3×3 conventional cells (64 and 216 atoms), every coordinate displaced by
0.05·sin(1.3·a + 2.1·c + 0.7) Å (atom a, component c), the same displacement the Swift bench applies.
"""
import argparse
import json
import math
import time
import warnings

import numpy as np
import torch


def diamond(r, a=5.431):
    basis = [[0, 0, 0], [.25, .25, .25], [0, .5, .5], [.25, .75, .75], [.5, 0, .5], [.75, .25, .75], [.5, .5, 0], [.75, .75, .25]]
    pos = [[(i + b[0]) * a, (j + b[1]) * a, (k + b[2]) * a] for i in range(r) for j in range(r) for k in range(r) for b in basis]
    pos = np.array(pos)
    for at in range(len(pos)):
        for c in range(3):
            pos[at, c] += 0.05 * math.sin(1.3 * at + 2.1 * c + 0.7)
    return pos, np.eye(3) * a * r


def timed(fn, min_runs=5, min_seconds=2.0):
    """Median and minimum wall time per call, and CPU time per call (steadier on a shared machine)."""
    fn()
    times = []
    start, cpu0 = time.perf_counter(), time.process_time()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(times)
    times.sort()
    return times[len(times) // 2], times[0], cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from pymatgen.core import Lattice, Structure
    from chgnet.model import CHGNet
    import chgnet.graph.converter as conv
    import chgnet.graph.crystalgraph as cg
    import chgnet.model.model as mm
    from chgnet.model.composition_model import AtomRef

    if args.dtype == "float64":
        # As the peers' golden script does: CHGNet hard-codes float32 in three module constants and in AtomRef.
        for m in (conv, cg, mm):
            m.TORCH_DTYPE = torch.float64
        torch.set_default_dtype(torch.float64)

        def assemble(self, graphs):
            feas = [torch.bincount(g.atomic_number - 1, minlength=self.max_num_elements) / g.atomic_number.shape[0] for g in graphs]
            return torch.stack(feas).to(torch.float64)
        AtomRef._assemble_graphs = assemble
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    if args.dtype == "float64":
        model = model.double()
    for r in args.sizes:
        pos, cell = diamond(r)
        s = Structure(Lattice(cell), ["Si"] * len(pos), pos, coords_are_cartesian=True)
        graph = model.graph_converter(s)
        full = timed(lambda: model.predict_structure(s, task="ef"))
        only = timed(lambda: model.predict_graph(graph, task="ef"))
        e = float(model.predict_graph(graph, task="e")["e"]) * len(pos)
        print(json.dumps({"atoms": len(pos), "dtype": args.dtype, "threads": torch.get_num_threads(), "energy": e,
                          "full_median_s": full[0], "full_min_s": full[1], "full_cpu_s": full[2],
                          "model_median_s": only[0], "model_min_s": only[1], "model_cpu_s": only[2]}), flush=True)


if __name__ == "__main__":
    main()
