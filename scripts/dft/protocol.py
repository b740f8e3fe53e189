"""Shared settings of the Si-defect DFT protocol (issue 7) and small helpers.

Run everything that imports gpaw with Debian's /usr/bin/python3 (GPAW 22.8,
ase 3.22.1). The helpers that only need ase/numpy also work with newer ase.
"""
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Scratch, git-ignored; SI_DFT_WORK moves it (used to test resuming).
WORK = Path(os.environ.get('SI_DFT_WORK', HERE / 'work'))
OUT = REPO / 'Fixtures' / 'data' / 'si-defects'
LATTICE_JSON = OUT / 'lattice.json'       # committed result of fit_lattice.py

# The protocol. Change nothing here without recomputing everything.
ECUT_EV = 300.0
XC = 'PBE'
SMEARING_EV = 0.05
SCF_ENERGY_TOL_EV = 1e-5                  # total energy, eV (see gpaw_calc)
FMAX = 0.05                               # eV/Å, ASE BFGS
MAX_STEPS = 80                            # BFGS steps
RATTLE_RMS = 0.1                          # Å, rms of |u| per atom
FIT_POINTS = (5.40, 5.43, 5.46, 5.49, 5.52)
MIN_DIST = 1.8                            # Å, no initial structure closer

MPI_CMD = ['mpiexec', '--allow-run-as-root', '-n', '2']
PYTHON = '/usr/bin/python3'               # Debian's, the one with gpaw

# Standard atomic weights used for ΔQ.
MASSES = {'Si': 28.085, 'C': 12.011, 'Ge': 72.630}


def dft_env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1',
               MKL_NUM_THREADS='1')
    return env


def kpts_for(atoms):
    """Γ only for the 64-site cell; smaller cubic cells get the Γ-centred
    grid with the same k-point density (2x2x2 for 8 sites), which samples the
    perfect crystal exactly as Γ does in the 2x2x2 supercell. Γ alone in an
    8-atom cell is so poor that rattled diamond 'relaxes' by 10 eV."""
    a0 = lattice_constant()
    n = int(round(2 * a0 / atoms.cell.lengths().min()))
    assert n >= 1 and np.allclose(atoms.cell.lengths() * n, 2 * a0), atoms.cell
    return {'size': (n, n, n), 'gamma': True}


def gpaw_calc(atoms, txt, kpts=None):
    """GPAW calculator of the protocol for these atoms."""
    from gpaw import GPAW, PW, FermiDirac
    from gpaw.convergence_criteria import Energy
    # GPAW 22.8's energy criterion is per valence electron; the protocol
    # fixes the total energy to 1e-5 eV, so divide by the electron count.
    nval = sum({'Si': 4, 'C': 4, 'Ge': 4}[s] for s in atoms.get_chemical_symbols())
    kpts = kpts_for(atoms) if kpts is None else kpts
    return GPAW(mode=PW(ECUT_EV), xc=XC, kpts=kpts,
                occupations=FermiDirac(SMEARING_EV),
                convergence={'energy': Energy(SCF_ENERGY_TOL_EV / nval)},
                txt=txt)


def code_versions():
    """Versions of the codes in use (call inside the GPAW python)."""
    import platform
    import subprocess
    import ase
    import gpaw
    v = {'gpaw': gpaw.__version__, 'ase': ase.__version__,
         'python': platform.python_version(), 'numpy': np.__version__,
         'libxc': str(gpaw.libraries.get('libxc'))}
    try:
        v['gpaw-data'] = subprocess.run(
            ['dpkg-query', '-W', '-f', '${Version}', 'gpaw-data'],
            capture_output=True, text=True).stdout.strip()
    except OSError:
        v['gpaw-data'] = 'unknown'
    return v


def lattice_constant():
    with open(LATTICE_JSON) as f:
        return json.load(f)['a0']


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    """Atomic write, so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


def fmax_of(forces):
    return float(np.sqrt((np.asarray(forces) ** 2).sum(axis=1)).max())


def delta_q(symbols, pos_a, pos_b, cell):
    """sqrt(Σ m_j |x_j − y_j|²) with minimum image (orthorhombic or not)."""
    d = np.asarray(pos_a) - np.asarray(pos_b)
    cell = np.asarray(cell)
    frac = np.linalg.solve(cell.T, d.T).T
    frac -= np.round(frac)
    d = frac @ cell
    m = np.array([MASSES[s] for s in symbols])
    return float(np.sqrt((m * (d ** 2).sum(axis=1)).sum()))
