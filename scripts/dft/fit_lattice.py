"""Fit the lattice constant of perfect Si under the protocol.

E(a) on the perfect 64-atom 2x2x2 conventional cell at the 5 lattice
constants of protocol.FIT_POINTS, Birch–Murnaghan fit of E(V), result written
to Fixtures/data/si-defects/lattice.json. Each point is cached in
work/lattice/, so an interrupted fit resumes.

    mpiexec --allow-run-as-root -n 2 /usr/bin/python3 scripts/dft/fit_lattice.py
"""
import time

import numpy as np
from ase.build import bulk
from ase.eos import EquationOfState
from ase.units import GPa
from gpaw.mpi import world

import protocol as P


def perfect(a):
    return bulk('Si', 'diamond', a=a, cubic=True).repeat((2, 2, 2))


def main():
    wd = P.WORK / 'lattice'
    if world.rank == 0:
        wd.mkdir(parents=True, exist_ok=True)
    world.barrier()
    points = []
    for a in P.FIT_POINTS:
        path = wd / f'E_{a:.3f}.json'
        rec = P.read_json(path)
        if rec is None:
            t0, w0 = time.process_time(), time.time()
            atoms = perfect(a)
            atoms.calc = P.gpaw_calc(atoms, str(wd / f'gpaw_{a:.3f}.txt'), kpts=(1, 1, 1))
            e = atoms.get_potential_energy()
            cpu = world.sum(time.process_time() - t0)
            rec = {'a': a, 'natoms': len(atoms), 'energy': e,
                   'cpu_seconds': cpu, 'wall_seconds': time.time() - w0}
            if world.rank == 0:
                P.write_json(path, rec)
            world.barrier()
        points.append(rec)
    if world.rank != 0:
        return
    a = np.array([p['a'] for p in points])
    e = np.array([p['energy'] for p in points])
    eos = EquationOfState(8 * a ** 3, e, eos='birchmurnaghan')
    v0, e0, b = eos.fit()
    a0 = float((v0 / 8) ** (1 / 3))
    # A cubic polynomial in a as a cross-check of the fit.
    c = np.polyfit(a, e, 3)
    roots = np.roots(np.polyder(c))
    roots = roots[np.isreal(roots)].real
    a_poly = float(min(roots, key=lambda r: abs(r - a0)))
    P.write_json(P.LATTICE_JSON, {
        'a0': round(a0, 4),
        'a0_unrounded': a0,
        'fit': 'Birch-Murnaghan E(V), V = 8 a^3, ase.eos',
        'a0_cubic_polynomial': a_poly,
        'e0_eV_per_64_atoms': float(e0),
        'bulk_modulus_GPa': float(b / GPa),
        'points': points,
        'versions': P.code_versions(),
        'protocol': {'ecut_eV': P.ECUT_EV, 'xc': P.XC, 'kpts': 'Gamma',
                     'fermi_dirac_eV': P.SMEARING_EV,
                     'scf_energy_tol_eV': P.SCF_ENERGY_TOL_EV},
    })
    print(f'a0 = {a0:.5f} Å (cubic poly {a_poly:.5f}), B = {b / GPa:.1f} GPa')


if __name__ == '__main__':
    main()
