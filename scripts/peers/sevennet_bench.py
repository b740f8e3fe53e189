#!/usr/bin/env python3
"""Times the real sevenn package (SevenNet-0 11Jul2024, PyTorch eager, one CPU thread) on the structures of
`scripts/bench sevennet`, for comparison with relaxft's port. Prints one JSON object per line.

    PYTHON scripts/peers/sevennet_bench.py [--sizes 2 3] [--dtype float32|float64]

Needs torch and sevenn 0.13.0 (`pip install sevenn==0.13.0`) in that Python. Structures: diamond Si, a = 5.431 Å,
2×2×2 and 3×3×3 conventional cells (64 and 216 atoms), every coordinate displaced by
0.05·sin(1.3·a + 2.1·c + 0.7) Å (atom a, component c), as the Swift bench builds them.

Per size: `full` = sevenn's graph construction (neighbour list) + energy and forces, as `SevenNetCalculator`
does; `model` = energy and forces on a prebuilt graph; `bptt` = energy, forces kept differentiable
(create_graph), x' = x + 0.01·F and the gradient of Σ 0.1·x' with respect to every trainable parameter (the
relaxft bench's BPTT step). float64 runs the package's model widened with `.double()` on float64 graphs; sevenn
builds its one-hot embedding in float32, so that module's output is widened by a forward hook (0/1 values: exact).
"""
import argparse
import json
import warnings

import torch

# The structures and the timing loop are those of the CHGNet peer bench (same directory).
from chgnet_bench import diamond, timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from ase import Atoms
    import sevenn
    import sevenn._keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.calculator import SevenNetCalculator
    from sevenn.train.dataload import unlabeled_atoms_to_graph
    from sevenn.util import dtype_correct

    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    calc = SevenNetCalculator("7net-0", device="cpu")
    model, cutoff = calc.model, calc.cutoff
    if dtype == torch.float64:
        model.double()

        def widen(module, inputs, data):
            for k in (KEY.NODE_FEATURE, KEY.NODE_ATTR):
                if k in data and data[k].is_floating_point():
                    data[k] = data[k].double()
            return data
        model._modules["onehot_idx_to_onehot"].register_forward_hook(widen)

    def graph(atoms):
        g = unlabeled_atoms_to_graph(atoms, cutoff, with_shift=False)
        return AtomGraphData(**{k: (torch.Tensor(v) if k == KEY.CELL_SHIFT else dtype_correct(v, float_dtype=dtype)) for k, v in g.items()})

    params = [p for p in model.parameters() if p.requires_grad]

    def bptt(data):
        model.train()  # sevenn differentiates the forces only in training mode (create_graph=self.training)
        out = model(data.clone())
        x = data[KEY.POS] + 0.01 * out[KEY.PRED_FORCE]
        torch.autograd.grad((0.1 * x).sum(), params)
        model.eval()

    for r in args.sizes:
        pos, cell = diamond(r)
        atoms = Atoms("Si%d" % len(pos), positions=pos, cell=cell, pbc=True)
        data = graph(atoms)
        model.eval()
        full = timed(lambda: model(graph(atoms)))
        only = timed(lambda: model(data.clone()))
        tb = timed(lambda: bptt(data), min_runs=3)
        e = float(model(data.clone())[KEY.PRED_TOTAL_ENERGY].sum())
        print(json.dumps({"atoms": len(pos), "dtype": args.dtype, "threads": torch.get_num_threads(), "sevenn": sevenn.__version__,
                          "torch": torch.__version__, "energy": e,
                          "full_median_s": full[0], "full_min_s": full[1], "full_cpu_s": full[2],
                          "model_median_s": only[0], "model_min_s": only[1], "model_cpu_s": only[2],
                          "bptt_median_s": tb[0], "bptt_min_s": tb[1], "bptt_cpu_s": tb[2]}), flush=True)


if __name__ == "__main__":
    main()
