"""Deterministic builder of the Si point-defect structures and the job plan.

build(kind, seed, reps) makes a (reps x reps x reps) conventional diamond cell
at the fitted lattice constant, builds the defect at a site drawn from the
seed, then rattles every atom (Gaussian, 0.1 Å rms of |u|) with the same rng.

The plan (which kind and seed goes to which split) is a fixed list, so it does
not move as more structures finish. The hexagonal interstitial appears only in
'test-unseen', never in train/val/test.

    /usr/bin/python3 scripts/dft/build_defects.py list [tiny|large]
    /usr/bin/python3 scripts/dft/build_defects.py write OUT.extxyz [tiny|large]
"""
import sys
from collections import namedtuple

import numpy as np
from ase import Atom
from ase.build import bulk
from ase.geometry import get_distances

import protocol as P

SEEN_KINDS = ('vacancy', 'divacancy', 'int_tetrahedral', 'int_split110',
              'sub_C')
UNSEEN_KINDS = ('int_hexagonal',)
TINY_KINDS = ('rattled', 'vacancy', 'int_tetrahedral', 'sub_C')
ALL_KINDS = ('rattled',) + SEEN_KINDS + UNSEEN_KINDS

# (split, seed base, structures per kind, kinds)
LARGE_SPLITS = (
    ('train', 1000, 14, SEEN_KINDS),
    ('val', 2000, 3, SEEN_KINDS),
    ('test', 3000, 3, SEEN_KINDS),
    ('test-unseen', 4000, 8, UNSEEN_KINDS),
)
TINY_PER_KIND = 3
TINY_SEED_BASE = 5000

SPLIT_HALF = 1.2   # Å, half length of the <110> dumbbell (bond ~2.4 Å)
SPLIT_PUSH = 0.6   # Å, outward shift of the 2 neighbours the dumbbell faces

Job = namedtuple('Job', 'set split kind seed reps')


def job_id(job):
    return f'{job.kind}-{job.seed}'


def plan(which):
    """Jobs of 'tiny' (8-site cells) or 'large' (64-site cells), in run order."""
    if which == 'tiny':
        return [Job('tiny', 'tiny', k, TINY_SEED_BASE + 100 * ALL_KINDS.index(k) + i, 1)
                for i in range(TINY_PER_KIND) for k in TINY_KINDS]
    if which != 'large':
        raise ValueError(which)
    jobs = []
    for split, base, n, kinds in LARGE_SPLITS:
        for k in kinds:
            for i in range(n):
                seed = base + 100 * ALL_KINDS.index(k) + i
                # Run order: every (split, kind) advances in proportion, so
                # whatever has finished covers all splits and kinds.
                jobs.append(((i + 0.5) / n, len(jobs), Job('large', split, k, seed, 2)))
    return [j for _, _, j in sorted(jobs)]


def find_job(which, jid):
    for j in plan(which):
        if job_id(j) == jid:
            return j
    raise KeyError(f'{jid} is not in the {which} plan')


def _mic(atoms, p):
    """Minimum-image vectors and distances from point p to every atom."""
    d, r = get_distances([p], atoms.positions, cell=atoms.cell, pbc=True)
    return d[0], r[0]


def _nearest(atoms, site, n=4):
    _, r = _mic(atoms, atoms.positions[site])
    r[site] = np.inf
    return [int(i) for i in np.argsort(r)[:n]]


def _empty_site(atoms, site, a, offsets, want):
    """First candidate p + offset whose nearest atom lies at `want` Å."""
    p = atoms.positions[site]
    for off in offsets:
        q = p + a * np.asarray(off)
        if abs(_mic(atoms, q)[1].min() - want) < 1e-6:
            return q
    raise RuntimeError('no interstitial site found')


def min_distance(atoms):
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def build(kind, seed, reps, a=None):
    a = P.lattice_constant() if a is None else a
    atoms = bulk('Si', 'diamond', a=a, cubic=True).repeat((reps,) * 3)
    rng = np.random.default_rng(seed)
    site = int(rng.integers(len(atoms)))
    p = atoms.positions[site].copy()
    if kind == 'rattled':
        pass
    elif kind == 'vacancy':
        del atoms[site]
    elif kind == 'divacancy':
        nb = _nearest(atoms, site)
        del atoms[[site, nb[int(rng.integers(4))]]]
    elif kind == 'int_tetrahedral':
        # 4 neighbours at the bond length sqrt(3)/4 a.
        q = _empty_site(atoms, site, a, [(.5, .5, .5)], np.sqrt(3) / 4 * a)
        atoms.append(Atom('Si', q))
    elif kind == 'int_hexagonal':
        # Centre of a six-ring: 6 neighbours at sqrt(11)/8 a.
        q = _empty_site(atoms, site, a, [(5 / 8,) * 3, (-5 / 8,) * 3],
                        np.sqrt(11) / 8 * a)
        atoms.append(Atom('Si', q))
    elif kind == 'int_split110':
        dirs = np.array([(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1),
                         (0, 1, 1), (0, 1, -1)]) / np.sqrt(2)
        u = dirs[int(rng.integers(6))]
        vec, _ = _mic(atoms, p)
        for j in _nearest(atoms, site):
            # The two neighbours along the dumbbell are pushed out, or the
            # dumbbell atoms would start 1.6 Å from them.
            if abs(vec[j] @ u) > 0.1 * a:
                atoms.positions[j] += SPLIT_PUSH * vec[j] / np.linalg.norm(vec[j])
        atoms.positions[site] = p + SPLIT_HALF * u
        atoms.append(Atom('Si', p - SPLIT_HALF * u))
    elif kind == 'sub_C':
        atoms[site].symbol = 'C'
    else:
        raise ValueError(kind)
    # Rattle after the defect is built; redraw (same rng stream, so still
    # deterministic) in the rare case two atoms come closer than MIN_DIST.
    base = atoms.positions.copy()
    while True:
        u = rng.normal(scale=P.RATTLE_RMS / np.sqrt(3), size=base.shape)
        atoms.positions = base + u
        if min_distance(atoms) >= P.MIN_DIST:
            break
    atoms.wrap()
    atoms.info.update(defect=kind, seed=seed)
    return atoms


def main(argv):
    cmd = argv[1] if len(argv) > 1 else 'list'
    if cmd == 'list':
        for which in argv[2:] or ['tiny', 'large']:
            for j in plan(which):
                print(which, j.split, j.kind, j.seed, job_id(j))
    elif cmd == 'write':
        from ase.io import write
        frames = [build(j.kind, j.seed, j.reps)
                  for w in argv[3:] or ['tiny', 'large'] for j in plan(w)]
        write(argv[2], frames)
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv)
