#!/usr/bin/env python3
"""Reference values of e3nn's real spherical harmonics and Wigner-3j symbols, for the Swift tests of the
equivariant building blocks (Fixtures/e3nn/reference.json).

    $RELAXFT_PEERS_PYTHON scripts/peers/e3nn_reference.py > Fixtures/e3nn/reference.json

Needs torch and e3nn 0.6.0 in that Python. Everything is computed in float64: `wigner_3j(l1, l2, l3)` for every
triple with l ≤ 3 that satisfies the triangle condition, and `spherical_harmonics([0, 1, 2, 3], v,
normalize=True, normalization='component')` at 12 fixed vectors (the first six along and between the axes, the
rest unnormalised, so that the normalisation is exercised too).
"""
import json

import torch
import e3nn
from e3nn import o3


def main():
    torch.set_default_dtype(torch.float64)
    vectors = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, -1, 1], [-1, 0, -1],
               [0.3, -1.7, 0.4], [2.1, 0.5, -0.9], [-0.2, 0.1, 3.3], [1.1, 1.2, 1.3], [-0.7, -0.4, 0.05], [0.01, -2.0, -1.0]]
    v = torch.tensor(vectors, dtype=torch.float64)
    sh = o3.spherical_harmonics([0, 1, 2, 3], v, normalize=True, normalization="component")
    w3j = []
    for l1 in range(4):
        for l2 in range(4):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 3) + 1):
                c = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                w3j.append({"l": [l1, l2, l3], "values": [float(x) for x in c.flatten()]})
    out = {"e3nn": e3nn.__version__, "torch": torch.__version__,
           "spherical_harmonics": {"vectors": vectors, "max_degree": 3, "values": [[float(x) for x in row] for row in sh]},
           "wigner_3j": w3j}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
