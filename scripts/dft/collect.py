"""Collect the finished DFT jobs into the committed extended-XYZ files.

    /usr/bin/python3 scripts/dft/collect.py   (any python3 with ase >= 3.22)

Re-runnable at any time: reads scripts/dft/work/jobs/*/*/, rewrites every file
of Fixtures/data/si-defects/ (except lattice.json) from what has finished,
including README.md, then reads every file back with ase.io.read and checks
that all numbers come back bit-exactly. Needs ase (any version >= 3.22).

Jobs whose scratch directory is gone (new machine) are taken back from the
committed files, so nothing committed is ever lost or recomputed.

Files per split S (tiny, train, val, test, test-unseen):
  S.extxyz               initial structure + pos_relaxed + per-frame info
                         (converged relaxations only)
  trajectories-S.extxyz  every ionic step (energy, forces) of every finished
                         relaxation of S, with structure_id and step
  results.json           per structure: the job's result.json (versions, times)
"""
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from ase.io import read
from ase.io.trajectory import Trajectory

import build_defects as B
import protocol as P

SPLITS = ('tiny', 'train', 'val', 'test', 'test-unseen')


def r(x):
    """Full-precision float text (round-trips through float())."""
    return repr(float(x))


def _value(v):
    if isinstance(v, (bool, np.bool_)):
        return 'T' if v else 'F'
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return r(v)
    s = str(v)
    assert s and not any(c in s for c in ' "=\\'), s
    return s


def frame_text(symbols, cell, columns, info):
    """One extended-XYZ frame; columns is [(name, (N,3) array)]."""
    props = 'species:S:1' + ''.join(f':{n}:R:3' for n, _ in columns)
    lat = ' '.join(r(x) for x in np.asarray(cell).reshape(-1))
    kv = ' '.join(f'{k}={_value(v)}' for k, v in info.items())
    lines = [str(len(symbols)),
             f'Lattice="{lat}" Properties={props} {kv} pbc="T T T"']
    for i, s in enumerate(symbols):
        lines.append(' '.join([s] + [r(x) for _, a in columns for x in a[i]]))
    return '\n'.join(lines) + '\n'


def load_job(which, job, committed):
    d = P.WORK / 'jobs' / which / B.job_id(job)
    res = P.read_json(d / 'result.json')
    if res is None:
        # Scratch of an earlier machine is gone: keep what was committed.
        return committed.get(B.job_id(job))
    init = read(str(d / 'initial.traj'))
    with Trajectory(str(d / 'relax.traj')) as t:
        frames = [t[i] for i in range(len(t))]
    assert len(frames) == res['dft_steps'] + 1, d
    return {'job': job, 'res': res, 'init': init, 'frames': frames}


def load_committed():
    """Jobs already in the committed files (results.json + extxyz), by id."""
    results = P.read_json(P.OUT / 'results.json', {})
    trajs = defaultdict(list)
    for s in SPLITS:
        path = P.OUT / f'trajectories-{s}.extxyz'
        if path.exists():
            for a in read(str(path), ':'):
                trajs[a.info['structure_id']].append(a)
    out = {}
    for sid, res in results.items():
        frames = sorted(trajs[sid], key=lambda a: a.info['step'])
        if len(frames) != res['dft_steps'] + 1:
            continue
        job = B.find_job(res['set'], sid)
        init = frames[0].copy()
        init.calc = None
        out[sid] = {'job': job, 'res': res, 'init': init, 'frames': frames}
    return out


def collect():
    done = defaultdict(list)       # split -> loaded jobs
    planned = Counter()
    pending = []
    committed = load_committed()
    for which in ('tiny', 'large'):
        for job in B.plan(which):
            planned[(job.split, job.kind)] += 1
            j = load_job(which, job, committed)
            if j:
                done[job.split].append(j)
            else:
                pending.append(job)
    return done, planned, pending


def write_split(split, jobs):
    main, trajs, expect = [], [], {'main': [], 'traj': []}
    for j in jobs:
        job, res, init, frames = j['job'], j['res'], j['init'], j['frames']
        sym, cell = init.get_chemical_symbols(), init.cell.array
        sid = B.job_id(job)
        for k, f in enumerate(frames):
            info = {'energy': f.get_potential_energy(), 'structure_id': sid,
                    'step': k, 'defect': job.kind, 'seed': job.seed,
                    'converged': res['converged']}
            trajs.append(frame_text(sym, cell, [('pos', f.positions),
                                                ('forces', f.get_forces())], info))
            expect['traj'].append((sym, cell, f.positions, f.get_forces(), info))
        if not res['converged']:
            continue
        relaxed = frames[-1].positions
        info = {'structure_id': sid, 'defect': job.kind, 'seed': job.seed,
                'energy_initial': res['energy_initial'],
                'energy_relaxed': res['energy_relaxed'],
                'dft_steps': res['dft_steps'], 'converged': res['converged'],
                'fmax_relaxed': res['fmax_relaxed'],
                'cpu_seconds': res['cpu_seconds']}
        assert np.array_equal(init.positions, frames[0].positions)
        main.append(frame_text(sym, cell, [('pos', init.positions),
                                           ('pos_relaxed', relaxed)], info))
        expect['main'].append((sym, cell, init.positions, relaxed, info))
    paths = (P.OUT / f'{split}.extxyz', P.OUT / f'trajectories-{split}.extxyz')
    for path, texts in zip(paths, (main, trajs)):
        if texts:
            path.write_text(''.join(texts))
        else:
            path.unlink(missing_ok=True)
    verify(paths[0], expect['main'], 'pos_relaxed')
    verify(paths[1], expect['traj'], 'forces')


def verify(path, expected, column):
    """Read back with ase.io.read and demand bit-exact equality."""
    if not expected:
        assert not path.exists()
        return
    got = read(str(path), ':')
    assert len(got) == len(expected), path
    for a, (sym, cell, pos, col, info) in zip(got, expected):
        assert a.get_chemical_symbols() == sym
        assert np.array_equal(a.cell.array, cell) and a.pbc.all()
        assert np.array_equal(a.positions, pos)
        if column == 'forces':
            assert np.array_equal(a.calc.results['forces'], col)
            assert a.calc.results['energy'] == info['energy']
            info = {k: v for k, v in info.items() if k != 'energy'}
        else:
            assert np.array_equal(a.arrays[column], col)
        for k, v in info.items():
            g = a.info[k]
            kind = (bool if isinstance(v, bool) else int if isinstance(v, int)
                    else float if isinstance(v, float) else str)
            ok = {bool: isinstance(g, (bool, np.bool_)),
                  int: isinstance(g, (int, np.integer)) and not isinstance(g, (bool, np.bool_)),
                  float: isinstance(g, (float, np.floating)),
                  str: isinstance(g, str)}[kind]
            assert ok and g == v, (path, k, g, v)


def min_dist(atoms, positions):
    a = atoms.copy()
    a.positions = positions
    return B.min_distance(a)


def stats(xs, fmt='{:.3g}'):
    if not xs:
        return '–', '–', '–'
    return (fmt.format(statistics.mean(xs)), fmt.format(statistics.median(xs)),
            fmt.format(max(xs)))


def readme(done, planned, pending):
    lat = P.read_json(P.LATTICE_JSON)
    all_jobs = [j for s in SPLITS for j in done.get(s, [])]
    L = []
    w = L.append
    w('# Si point defects relaxed with GPAW (initial → relaxed)\n')
    w('Generated by `scripts/dft/collect.py` from the jobs finished so far; do not edit by hand.\n')
    w('Real DFT data made by the committed scripts in `scripts/dft/` (issue 7). Each frame of '
      '`<split>.extxyz` is the *initial* (built and rattled) structure (`pos`, `Lattice`, '
      '`pbc="T T T"`, species) with the DFT-relaxed positions in the per-atom column '
      '`pos_relaxed` (not wrapped back into the cell: compare with the minimum image) (`Properties=species:S:1:pos:R:3:pos_relaxed:R:3`) and the info keys '
      '`structure_id`, `defect`, `seed`, `energy_initial`, `energy_relaxed` (eV), `dft_steps`, '
      '`converged`, `fmax_relaxed` (eV/Å), `cpu_seconds`. Only converged relaxations are in these '
      'files. `trajectories-<split>.extxyz` holds every ionic step of every finished relaxation '
      '(`pos`, per-atom `forces` in eV/Å, `energy` in eV in the comment line, and '
      '`structure_id`, `step` (0 = initial), `defect`, `seed`, `converged`), for pretraining. '
      'All floats are written with Python `repr()`, so they read back bit-exactly '
      '(checked with `ase.io.read(path, ":")` by the collector).\n')
    w('## Protocol\n')
    w(f'- GPAW plane waves {P.ECUT_EV:g} eV, {P.XC}, Γ point only (64-site cells; the 8-site '
      '`tiny` cells use the Γ-centred 2×2×2 grid, the same k-point density, which samples the '
      'perfect crystal exactly like Γ in the 2×2×2 supercell — Γ alone in an 8-atom cell is so '
      'poor that rattled diamond "relaxes" by 10 eV into a non-diamond structure), Fermi–Dirac smearing '
      f'{P.SMEARING_EV} eV, SCF converged to {P.SCF_ENERGY_TOL_EV:g} eV in the total energy '
      '(GPAW 22.8 counts its energy criterion per valence electron, so the scripts pass '
      '1e-5 eV / N_valence), plus GPAW\'s default density and eigenstate criteria.')
    w('- `energy` is ASE\'s potential energy from GPAW, i.e. extrapolated to zero smearing; '
      'forces are GPAW\'s.')
    w('- GPAW 22.8 predates the fix (24.1.0) of a Γ-only plane-wave bug: random initial wave '
      'functions could leave a fake state at 0 eV, occupied in periodic cells. GPAW\'s default '
      'number of bands is below the LCAO basis size here, so every calculation started from '
      'LCAO wave functions only; `relax.py` checks each GPAW log for it before recording a job.')
    w(f'- Cell: 2×2×2 conventional diamond cell (64 sites) for train/val/test/test-unseen, '
      f'1×1×1 (8 sites) for `tiny`, at the fitted lattice constant a = {lat["a0"]} Å; the cell '
      'is fixed.')
    w(f'- ASE BFGS (default maxstep 0.2 Å) to fmax {P.FMAX} eV/Å, at most {P.MAX_STEPS} steps. '
      '`dft_steps` = BFGS steps taken; the trajectory has `dft_steps + 1` frames.')
    w(f'- Initial structures (`scripts/dft/build_defects.py`, deterministic from the seed): '
      'the defect is built at a site drawn from the seed, then every atom is displaced by a '
      f'Gaussian with σ = {P.RATTLE_RMS}/√3 Å per Cartesian component (so the rms of |u| is '
      f'{P.RATTLE_RMS} Å), redrawn from the same rng if two atoms come closer than '
      f'{P.MIN_DIST} Å; positions are then wrapped into the cell.')
    w('- Defect kinds: `vacancy` (63 atoms), `divacancy` (two nearest-neighbour sites, 62), '
      '`int_tetrahedral` (T site, 65), `int_hexagonal` (H site, 65), `int_split110` '
      '(⟨110⟩ dumbbell of half-length 1.2 Å on a site, the two neighbours it faces pushed out by '
      '0.6 Å, 65), `sub_C` (one C substituting Si, 64); tiny set also `rattled` (perfect cell, '
      'rattled only).')
    w('- Splits by seed (fixed list in `build_defects.py`): train 14, val 3, test 3 per kind '
      'of {vacancy, divacancy, int_tetrahedral, int_split110, sub_C}; `test-unseen` has 8 '
      '`int_hexagonal`, a kind train/val/test never contain. `tiny`: 3 each of rattled, '
      'vacancy, int_tetrahedral, sub_C on 8-site cells.')
    w('- 2 MPI ranks (`mpiexec -n 2`), OMP_NUM_THREADS=1, run under `nice -n 19`. '
      '`cpu_seconds` is the CPU time summed over both ranks (an interrupted and resumed job '
      'counts its attempts up to their last finished ionic step).\n')
    w('## Lattice constant\n')
    w(f'Perfect 64-atom cell, same settings, {lat["fit"]}: **a0 = {lat["a0_unrounded"]:.5f} Å**, '
      f'used as {lat["a0"]} Å (cubic polynomial in a: {lat["a0_cubic_polynomial"]:.5f} Å; '
      f'bulk modulus {lat["bulk_modulus_GPa"]:.1f} GPa).\n')
    w('| a (Å) | E (eV, 64 atoms) |\n|---|---|')
    for p in lat['points']:
        w(f'| {p["a"]:.3f} | {p["energy"]!r} |')
    w('')
    w('## Code versions\n')
    vers = Counter(tuple(sorted(j['res']['versions'].items())) for j in all_jobs)
    vers[tuple(sorted(lat['versions'].items()))] += 0
    for v, n in vers.items():
        w('- ' + ', '.join(f'{k} {x}' for k, x in v) + (f' ({n} structures)' if n else ' (lattice fit)'))
    w('- PAW setups: Debian package gpaw-data (version above), GPAW\'s default PBE setups '
      '(Si, C).\n')
    w('## Counts (converged / finished / planned)\n')
    kinds = [k for k in B.ALL_KINDS if any(planned[(s, k)] for s in SPLITS)]
    w('| kind | ' + ' | '.join(SPLITS) + ' |\n|---|' + '---|' * len(SPLITS))
    for k in kinds:
        cells = []
        for s in SPLITS:
            js = [j for j in done.get(s, []) if j['job'].kind == k]
            conv = sum(j['res']['converged'] for j in js)
            cells.append(f'{conv} / {len(js)} / {planned[(s, k)]}' if planned[(s, k)] else '')
        w(f'| {k} | ' + ' | '.join(cells) + ' |')
    large_conv = sum(j['res']['converged'] for s in SPLITS[1:] for j in done.get(s, []))
    w(f'\nLarge (62–65-atom) structures converged: {large_conv} of '
      f'{sum(n for (s, _), n in planned.items() if s != "tiny")} planned.')
    bad = [j for j in all_jobs if not j['res']['converged']]
    if bad:
        w('Not converged in the step limit (kept in the trajectory files only): '
          + ', '.join(f'{j["res"]["id"]} (fmax {j["res"]["fmax_relaxed"]:.3f})' for j in bad) + '.')
    fails = sorted(str(p.parent.name) for p in (P.WORK / 'jobs').glob('*/*/failures.json')
                   if not (p.parent / 'result.json').exists())
    if fails:
        w('Failed jobs (not in the files): ' + ', '.join(fails) + '.')
    dmin = [(min_dist(j['init'], j['init'].positions), min_dist(j['init'], j['frames'][-1].positions))
            for j in all_jobs if j['res']['converged']]
    if dmin:
        w(f'\nShortest interatomic distance (minimum image): {min(d[0] for d in dmin):.3f} Å over '
          f'the initial structures, {min(d[1] for d in dmin):.3f} Å over the relaxed ones.')
    w('')
    w('## Statistics per split\n')
    w('ΔQ = sqrt(Σ_j m_j |x_j − x*_j|²) between initial and relaxed positions (minimum image, '
      'masses Si 28.085, C 12.011 u), in Å·√u: the "do nothing" baseline. ΔE = E_initial − '
      'E_relaxed. Times per structure on the 2 cores (wall time depends on the load).\n')
    w('| split | n | steps mean / max | ΔQ mean / median / max | ΔE mean / max (eV) '
      '| CPU s mean / max | wall s mean / max |\n|---|---|---|---|---|---|---|')
    for s in SPLITS:
        js = [j for j in done.get(s, []) if j['res']['converged']]
        if not js:
            continue
        steps = [j['res']['dft_steps'] for j in js]
        dq = [P.delta_q(j['init'].get_chemical_symbols(), j['init'].positions,
                        j['frames'][-1].positions, j['init'].cell.array) for j in js]
        de = [j['res']['energy_initial'] - j['res']['energy_relaxed'] for j in js]
        cpu = [j['res']['cpu_seconds'] for j in js]
        wall = [j['res']['wall_seconds'] for j in js]
        dqm = stats(dq)
        w(f'| {s} | {len(js)} | {statistics.mean(steps):.1f} / {max(steps)} | '
          f'{dqm[0]} / {dqm[1]} / {dqm[2]} | {statistics.mean(de):.3f} / {max(de):.3f} | '
          f'{statistics.mean(cpu):.0f} / {max(cpu):.0f} | {statistics.mean(wall):.0f} / {max(wall):.0f} |')
    w('\nPer kind (the large splits together; tiny apart):\n')
    w('| cells | kind | n | steps mean / max | ΔQ mean / median / max | CPU s mean / max |'
      '\n|---|---|---|---|---|---|')
    for cells, splits in (('64-site', SPLITS[1:]), ('8-site tiny', SPLITS[:1])):
        for k in kinds:
            js = [j for s in splits for j in done.get(s, [])
                  if j['job'].kind == k and j['res']['converged']]
            if not js:
                continue
            steps = [j['res']['dft_steps'] for j in js]
            dq = stats([P.delta_q(j['init'].get_chemical_symbols(), j['init'].positions,
                                  j['frames'][-1].positions, j['init'].cell.array) for j in js])
            cpu = [j['res']['cpu_seconds'] for j in js]
            w(f'| {cells} | {k} | {len(js)} | {statistics.mean(steps):.1f} / {max(steps)} | '
              f'{dq[0]} / {dq[1]} / {dq[2]} | {statistics.mean(cpu):.0f} / {max(cpu):.0f} |')
    w('')
    w('## Reproduce / resume\n')
    w('Needs Debian\'s GPAW (`apt-get install -y gpaw gpaw-data`, which brings '
      '`/usr/bin/python3` with ase 3.22.1 and OpenMPI). From the repository root:\n')
    w('```sh\n'
      '# lattice constant (writes Fixtures/data/si-defects/lattice.json; skipped by the queue if present)\n'
      'OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpiexec --allow-run-as-root -n 2 /usr/bin/python3 scripts/dft/fit_lattice.py\n'
      '# all jobs (tiny set first, then the large set), one at a time, niced, in the background;\n'
      '# finished jobs are skipped, an interrupted one resumes from its trajectory\n'
      'scripts/dft/start_queue.sh\n'
      'tail -f scripts/dft/work/queue.log            # progress\n'
      'touch scripts/dft/work/STOP                   # stop after the current job\n'
      'kill -- -$(cat scripts/dft/work/queue.pid)    # stop now (resumes later)\n'
      '# one job by hand\n'
      'OMP_NUM_THREADS=1 mpiexec --allow-run-as-root -n 2 /usr/bin/python3 scripts/dft/relax.py large vacancy-1100\n'
      '# rebuild these files from whatever has finished (any time)\n'
      '/usr/bin/python3 scripts/dft/collect.py    # any python3 with ase\n'
      '```\n')
    w(f'Jobs still pending: {len(pending)}. Scratch (GPAW logs, .traj, restart files) lives in '
      '`scripts/dft/work/`, which is not committed and does not survive a new machine: run the '
      'collector and commit this folder before a session ends. Jobs listed in `results.json` '
      '(per-structure metadata: times, attempts, code versions) are never run again, and the '
      'collector rebuilds these files byte-identically from the committed files alone.')
    (P.OUT / 'README.md').write_text('\n'.join(L) + '\n')


def main():
    P.OUT.mkdir(parents=True, exist_ok=True)
    done, planned, pending = collect()
    for s in SPLITS:
        write_split(s, done.get(s, []))
    readme(done, planned, pending)
    P.write_json(P.OUT / 'results.json',
                 {B.job_id(j['job']): j['res'] for s in SPLITS for j in done.get(s, [])})
    for s in SPLITS:
        js = done.get(s, [])
        print(f'{s}: {sum(j["res"]["converged"] for j in js)} converged, {len(js)} finished')
    print(f'pending: {len(pending)}; files verified bit-exactly with ase', end=' ')
    import ase
    print(ase.__version__)


if __name__ == '__main__':
    main()
