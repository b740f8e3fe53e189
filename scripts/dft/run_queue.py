"""Run the DFT jobs one at a time, niced, skipping finished ones.

    /usr/bin/python3 scripts/dft/run_queue.py [tiny] [large]

With no argument: lattice fit (if lattice.json is missing), then the tiny
set, then the large set. Start it in the background with start_queue.sh.
Jobs listed in the committed results.json are skipped too.
Only one runner at a time (lock file work/queue.lock). A job that failed
twice (e.g. SCF not converging) is skipped; delete its failures.json to retry.
Stop after the current job: touch scripts/dft/work/STOP.
Stop now: kill -- -$(cat scripts/dft/work/queue.pid)
"""
import fcntl
import os
import subprocess
import sys
import time

import build_defects as B
import protocol as P

MAX_FAILURES = 2


def log(msg):
    print(time.strftime('%Y-%m-%d %H:%M:%S'), msg, flush=True)


def run(args, cwd):
    t0 = time.time()
    r = subprocess.run(P.MPI_CMD + [P.PYTHON] + args, cwd=cwd, env=P.dft_env())
    return r.returncode, time.time() - t0


def main(argv):
    sets = argv[1:] or ['tiny', 'large']
    P.WORK.mkdir(parents=True, exist_ok=True)
    lock = open(P.WORK / 'queue.lock', 'w')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit('another run_queue.py holds work/queue.lock; not starting')
    os.nice(max(0, 19 - os.nice(0)))      # builds and tests keep priority
    (P.WORK / 'queue.pid').write_text(f'{os.getpid()}\n')
    (P.WORK / 'STOP').unlink(missing_ok=True)
    log(f'queue start, pid {os.getpid()}, sets {sets}')

    if not P.LATTICE_JSON.exists():
        log('fitting the lattice constant')
        rc, dt = run(['fit_lattice.py'], P.HERE)
        if rc or not P.LATTICE_JSON.exists():
            sys.exit(f'lattice fit failed (exit {rc})')
    for which in sets:
        # Finished on an earlier machine and committed: not run again.
        committed = P.read_json(P.OUT / 'results.json', {})
        jobs = B.plan(which)
        for n, job in enumerate(jobs, 1):
            jid = B.job_id(job)
            d = P.WORK / 'jobs' / which / jid
            if (d / 'result.json').exists() or jid in committed:
                continue
            fails = P.read_json(d / 'failures.json', [])
            if len(fails) >= MAX_FAILURES:
                continue
            if (P.WORK / 'STOP').exists():
                log('STOP file found, exiting')
                return
            log(f'start {which} {n}/{len(jobs)} {jid} ({job.split})')
            rc, dt = run(['relax.py', which, jid], P.HERE)
            res = P.read_json(d / 'result.json')
            if rc == 0 and res:
                log(f'done  {jid}: {res["dft_steps"]} steps, converged '
                    f'{res["converged"]}, fmax {res["fmax_relaxed"]:.4f}, '
                    f'wall {dt:.0f} s, cpu {res["cpu_seconds"]:.0f} s')
            else:
                d.mkdir(parents=True, exist_ok=True)
                fails.append({'exit': rc, 'wall_seconds': dt,
                              'time': time.strftime('%Y-%m-%d %H:%M:%S')})
                P.write_json(d / 'failures.json', fails)
                log(f'FAIL  {jid}: exit {rc} after {dt:.0f} s (see {d}/gpaw-*.txt)')
    log('queue empty, exiting')


if __name__ == '__main__':
    main(sys.argv)
