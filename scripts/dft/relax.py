"""Relax one defect structure under the protocol (one job = one directory).

    mpiexec --allow-run-as-root -n 2 /usr/bin/python3 scripts/dft/relax.py {tiny|large} JOB_ID

Job directory work/jobs/<set>/<JOB_ID>/:
  initial.traj   the built structure (checked against the builder on resume)
  relax.traj     one frame per ionic step: positions, energy, forces
  bfgs.json      ASE BFGS restart file (Hessian, last r and f)
  state.json     CPU/wall seconds up to the last written frame
  result.json    written last; its presence marks the job finished
  gpaw-N.txt, opt-N.log   GPAW and optimizer logs of attempt N

Resume: a job without result.json restarts from the last frame of
relax.traj with the saved BFGS Hessian. That frame is dropped from the file
and recomputed (the optimizer writes it again), so any kill point is safe.
Without a readable bfgs.json the job restarts from scratch.
"""
import sys
import time
from datetime import datetime, timezone

import numpy as np
from ase.io import Trajectory, read
from ase.optimize import BFGS
from gpaw.mpi import world

import build_defects as B
import protocol as P


def readable_frames(path):
    """Frames of a trajectory, ignoring a last frame cut by a kill."""
    frames = []
    try:
        with Trajectory(str(path)) as t:
            for i in range(len(t)):
                try:
                    frames.append(t[i])
                except Exception:
                    break
    except Exception:
        pass
    return frames


def on_master(fn):
    if world.rank == 0:
        fn()
    world.barrier()


def main(which, jid):
    job = B.find_job(which, jid)
    d = P.WORK / 'jobs' / which / jid
    if (d / 'result.json').exists() or jid in P.read_json(P.OUT / 'results.json', {}):
        return
    on_master(lambda: d.mkdir(parents=True, exist_ok=True))

    atoms = B.build(job.kind, job.seed, job.reps)
    init = d / 'initial.traj'
    exists = init.exists()
    world.barrier()   # every rank looks before rank 0 writes
    if exists:
        old = read(str(init), parallel=False)
        if not (np.array_equal(old.positions, atoms.positions)
                and old.get_chemical_symbols() == atoms.get_chemical_symbols()):
            raise SystemExit(f'{init} differs from the builder: remove the job dir')
    else:
        on_master(lambda: atoms.write(str(init), parallel=False))

    traj, restart, state_path = d / 'relax.traj', d / 'bfgs.json', d / 'state.json'
    frames = readable_frames(traj) if traj.exists() else []
    state = P.read_json(state_path, {})
    bfgs_ok = P.read_json(restart) is not None
    world.barrier()   # every rank has read before rank 0 rewrites
    if frames and bfgs_ok and state.get('frames') in (len(frames), len(frames) - 1):
        done = len(frames) - 1
        atoms.positions = frames[-1].positions
        # Drop the last frame: the optimizer recomputes and rewrites it.
        def cut():
            with Trajectory(str(traj), 'w') as t:
                for f in frames[:-1]:
                    t.write(f)
        on_master(cut)
        cpu0, wall0 = state['cpu_seconds'], state['wall_seconds']
        attempt = state.get('attempt', 0) + 1
    else:
        def clean():
            for f in (traj, restart, state_path):
                f.unlink(missing_ok=True)
        on_master(clean)
        done, cpu0, wall0, attempt, frames = 0, 0.0, 0.0, 1, []

    t_cpu, t_wall = time.process_time(), time.time()
    atoms.calc = P.gpaw_calc(atoms, str(d / f'gpaw-{attempt}.txt'))
    tr = Trajectory(str(traj), 'a', atoms)
    opt = BFGS(atoms, restart=str(restart), trajectory=tr,
               logfile=str(d / f'opt-{attempt}.log'))
    nframes = [done]

    def record():
        # Runs after each frame is written (observer order), on all ranks.
        nframes[0] += 1
        cpu = cpu0 + world.sum(time.process_time() - t_cpu)
        st = {'frames': nframes[0], 'attempt': attempt, 'cpu_seconds': cpu,
              'wall_seconds': wall0 + time.time() - t_wall}
        on_master(lambda: P.write_json(state_path, st))
    opt.attach(record)
    if done < P.MAX_STEPS:
        opt.run(fmax=P.FMAX, steps=P.MAX_STEPS - done)
    else:
        # Out of steps: only the dropped last frame is recomputed.
        atoms.get_forces()
        opt.call_observers()
    tr.close()
    world.barrier()

    # GPAW < 24.1 could put a fake 0 eV state into Γ-only plane-wave runs
    # whose initial guess used random wave functions (release notes of
    # 24.1.0, "bug0"); ours start from LCAO only. Every rank refuses a run
    # that did not, so none waits on the others.
    for log in sorted(d.glob('gpaw-*.txt')):
        if 'from random numbers' in log.read_text():
            raise SystemExit(f'{log}: random initial wave functions (GPAW < 24.1 '
                             'Γ-point bug); not recorded as finished')

    if world.rank == 0:
        frames = readable_frames(traj)
        fmax = P.fmax_of(frames[-1].get_forces())
        st = P.read_json(state_path)
        P.write_json(d / 'result.json', {
            'id': jid, 'set': which, 'split': job.split, 'defect': job.kind,
            'seed': job.seed, 'natoms': len(atoms),
            'dft_steps': len(frames) - 1,
            'converged': bool(fmax < P.FMAX), 'fmax_relaxed': fmax,
            'energy_initial': frames[0].get_potential_energy(),
            'energy_relaxed': frames[-1].get_potential_energy(),
            'cpu_seconds': st['cpu_seconds'], 'wall_seconds': st['wall_seconds'],
            'attempts': attempt, 'mpi_ranks': world.size,
            'lattice_constant': P.lattice_constant(),
            'kpts': list(P.kpts_for(atoms)['size']),
            'finished': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'versions': P.code_versions(),
        })
        print(f'{jid}: {len(frames) - 1} steps, fmax {fmax:.4f}, '
              f'E {frames[-1].get_potential_energy():.6f} eV, '
              f'cpu {st["cpu_seconds"]:.0f} s')
    world.barrier()


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
