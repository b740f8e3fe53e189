#!/usr/bin/env python3
"""Tables of scripts/experiments/reproduce.sh: per-structure results and the results document.

    results.py OUT [--markdown FILE.md [--figures DIR] [--binary RELAXFT]] [--memory MEMORY.json]

Reads OUT/plan.json, OUT/settings/*.env, OUT/eval/<model>/<split>/<label>.csv (per-structure CSVs of
`relaxft evaluate`, one model each; label `pretrained` or `<method>-s<seed>`) with their `.time` files, and
OUT/train/<model>-<method>-s<seed>/summary.json; writes OUT/results.csv (one row per model, method, seed, split and
structure) and, with --markdown, the results document: every table, figures from `relaxft report` (--binary) in
--figures, the memory table of `BENCH_JSON=… scripts/bench memory` (--memory). What the plan holds and the run
has not finished yet is listed, and the document is marked partial. Python 3 standard library only.
"""
import argparse
import csv
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

FIELDS = ['model', 'method', 'seed', 'split', 'structure', 'group', 'atoms', 'initial_dq', 'dq', 'dq_pretrained', 'improvement',
          'rmsd', 'converged', 'steps', 'fmax', 'relax_energy_error', 'energy_error_per_atom', 'differing_bonds', 'same_basin']
METHODS = {
    'pretrained': 'no fine-tuning',
    'bptt': 'BPTT through T FIRE steps, checkpointed gradients',
    'implicit': 'implicit differentiation at the FIRE minimum (fmax 1e-6 eV/Å)',
    'guided': 'guided: a recorded K-step FIRE window, then the implicit gradient at the minimum of the same relaxation; '
              'loss W·ΔQ(x_K) + (1 − W)·ΔQ(x*)',
    'ef': 'energy/force matching on the DFT relaxation frames of the training structures',
    'ef-then-bptt': 'energy/force matching, then BPTT (as `bptt`) from that model',
}
BPTT_LIKE = ['bptt', 'implicit', 'guided']
SPLITS = {'test': 'Test split', 'unseen': 'Unseen defect kind', 'val': 'Validation split (not held out)'}
MODEL_ORDER = ['so3krates', 'schnet', 'chgnet', 'sevennet']


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return float('nan')


def read_eval(path):
    """The rows of a one-model evaluate CSV (column suffix _1)."""
    rows, header = [], None
    with open(path) as f:
        for line in f:
            if line.startswith('#'):
                continue
            if header is None:
                header = next(csv.reader([line]))
                continue
            rows.append(dict(zip(header, next(csv.reader([line])))))
    return rows


def parse_label(label):
    if label == 'pretrained':
        return 'pretrained', ''
    m = re.fullmatch(r'(.+)-s(\d+)', label)
    return (m.group(1), m.group(2)) if m else (label, '')


def read_env(path):
    try:
        return dict(line.split('=', 1) for line in Path(path).read_text().split() if '=' in line)
    except OSError:
        return {}


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def read_time(path):
    """CPU seconds and peak RSS (MB) of an evaluation, from its /usr/bin/time file."""
    try:
        t = dict(kv.split('=', 1) for kv in Path(path).read_text().split())
        cpu = sum(num(x) for x in t['cpu_seconds'].split('+'))
        return cpu, num(t['max_rss_kb']) / 1024
    except (OSError, KeyError, ValueError):
        return float('nan'), float('nan')


def collect(out):
    rows = []
    for model_dir in sorted((Path(out) / 'eval').iterdir() if (Path(out) / 'eval').is_dir() else []):
        for split_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            pre_path = split_dir / 'pretrained.csv'
            pre = {r['structure']: r for r in read_eval(pre_path)} if pre_path.is_file() else {}
            for path in sorted(split_dir.glob('*.csv')):
                method, seed = parse_label(path.stem)
                for r in read_eval(path):
                    dq = num(r.get('dq_1'))
                    p = pre.get(r['structure'], {})
                    dq1 = num(p.get('dq_1'))
                    rows.append({
                        'model': model_dir.name, 'method': method, 'seed': seed, 'split': split_dir.name,
                        'structure': r['structure'], 'group': r.get('group', ''), 'atoms': r.get('atoms', ''),
                        'initial_dq': r.get('initial_dq', ''), 'dq': r.get('dq_1', ''), 'dq_pretrained': p.get('dq_1', ''),
                        'improvement': '' if method == 'pretrained' or not dq1 > 0 else 1 - dq / dq1,
                        'rmsd': r.get('rmsd_1', ''), 'converged': r.get('converged_1', ''), 'steps': r.get('steps_1', ''),
                        'fmax': r.get('fmax_1', ''), 'relax_energy_error': r.get('relax_energy_error_1', ''),
                        'energy_error_per_atom': r.get('energy_error_per_atom_1', ''),
                        'differing_bonds': r.get('differing_bonds_1', ''), 'same_basin': r.get('same_basin_1', ''),
                    })
    return rows


def f3(x):
    return '–' if x != x else f'{x:.3g}'


def pct(x):
    return '–' if x != x else f'{100 * x:+.0f} %'


def stats(rows):
    """Metrics of one model file on one split."""
    dq = [num(r['dq']) for r in rows]
    pre = [num(r['dq_pretrained']) for r in rows]
    ere = [abs(num(r['relax_energy_error'])) for r in rows if r['relax_energy_error'] not in ('', None)]
    imp = [num(r['improvement']) for r in rows if r['improvement'] != '']
    n = len(dq)
    mean_pre = statistics.mean(pre) if pre else float('nan')
    return {
        'n': n, 'mean': statistics.mean(dq), 'median': statistics.median(dq),
        'f01': sum(x < 0.1 for x in dq) / n, 'f03': sum(x < 0.3 for x in dq) / n,
        'basin': sum(r['same_basin'] == 'true' for r in rows) / n,
        'conv': sum(r['converged'] == 'true' for r in rows) / n,
        'ere': statistics.mean(ere) if ere else float('nan'),
        'cut': 1 - statistics.mean(dq) / mean_pre if mean_pre > 0 else float('nan'),
        'imp': statistics.median(imp) if imp else float('nan'),
    }


def over_seeds(per_seed, key):
    """Mean and sample standard deviation over seeds (sd nan for one seed)."""
    v = [s[key] for s in per_seed if s[key] == s[key]]
    if not v:
        return float('nan'), float('nan')
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float('nan')


def pm(mean, sd, fmt=f3):
    if fmt is pct:  # a spread of percentages in points
        return pct(mean) + ('' if sd != sd else f' ± {100 * sd:.0f}')
    return fmt(mean) + ('' if sd != sd else f' ± {fmt(sd)}')


def frac(x):
    return '–' if x != x else f'{x:.2f}'


def pctpt(x):
    return '–' if x != x else f'{100 * x:.0f}'


class Results:
    def __init__(self, out, rows):
        self.out = Path(out)
        self.rows = rows
        self.plan = read_json(self.out / 'plan.json')
        present = {r['model'] for r in rows}
        planned = self.plan.get('models', '').split()
        self.models = [m for m in MODEL_ORDER if m in present or m in planned] + sorted(present - set(MODEL_ORDER))
        self.methods = self.plan.get('methods', ' '.join(k for k in METHODS if k != 'pretrained')).split()
        self.seeds = self.plan.get('seeds', '0 1 2').split()

    def select(self, model, method, split, seed=None):
        return [r for r in self.rows if r['model'] == model and r['method'] == method and r['split'] == split
                and (seed is None or r['seed'] == seed)]

    def per_seed(self, model, method, split):
        """Stats of each seed's model on a split (one entry for the pretrained model)."""
        seeds = sorted({r['seed'] for r in self.select(model, method, split)}, key=lambda s: int(s) if s else -1)
        return [stats(self.select(model, method, split, s)) for s in seeds]

    def mean_dq(self, model, method, split):
        return over_seeds(self.per_seed(model, method, split), 'mean')

    def summary(self, model, method):
        return [read_json(self.out / 'train' / f'{model}-{method}-s{s}' / 'summary.json') for s in self.seeds]

    def missing(self):
        """Planned trainings and evaluations that do not exist yet, as text lines."""
        lines = []
        for m in self.models:
            if not any(r['model'] == m for r in self.rows):
                lines.append(f'{m}: not started')
                continue
            todo = []
            for meth in self.methods:
                for s in self.seeds:
                    run = self.out / 'train' / f'{m}-{meth}-s{s}'
                    if (run / 'summary.json').is_file():
                        if not self.select(m, meth, 'test', s):
                            todo.append(f'{meth} s{s} (trained, not evaluated)')
                    elif (run / 'checkpoint.safetensors').is_file():
                        todo.append(f'{meth} s{s} (under way or interrupted)')
                    else:
                        todo.append(f'{meth} s{s}')
            if todo:
                lines.append(f'{m}: ' + ', '.join(todo))
        return lines


def criteria(w, R):
    """The issue's done-when criteria, checked on the test split (means over seeds)."""
    def pct(x):  # one decimal, so that a verdict never contradicts its rounded figure
        return '–' if x != x else f'{100 * x:+.1f} %'
    out = []
    pre = R.mean_dq('so3krates', 'pretrained', 'test')[0]
    b, bsd = R.mean_dq('so3krates', 'bptt', 'test')
    ef, efsd = R.mean_dq('so3krates', 'ef', 'test')
    efb, efbsd = R.mean_dq('so3krates', 'ef-then-bptt', 'test')
    if pre == pre and b == b:
        cut = 1 - b / pre
        out.append(f'- SO3krates, pure BPTT cuts test ΔQ by ≥ 50 %: {pct(cut)} ({f3(pre)} → {pm(b, bsd)}) — **{"met" if cut >= 0.5 else "not met"}**')
    if ef == ef and efb == efb:
        out.append(f'- SO3krates, EF → BPTT beats EF alone: {pm(efb, efbsd)} vs {pm(ef, efsd)} — **{"met" if efb < ef else "not met"}**')
    cpre = R.mean_dq('chgnet', 'pretrained', 'test')[0]
    if cpre == cpre:
        basin_pre = over_seeds(R.per_seed('chgnet', 'pretrained', 'test'), 'basin')[0]
        for meth in R.methods:
            c, csd = R.mean_dq('chgnet', meth, 'test')
            if c != c:
                continue
            basin = over_seeds(R.per_seed('chgnet', meth, 'test'), 'basin')[0]
            ok = 1 - c / cpre >= 0.4 and basin > basin_pre
            out.append(f'- CHGNet `{meth}`: cut ≥ 40 % and more structures in the DFT basin: {pct(1 - c / cpre)} ({f3(cpre)} → {pm(c, csd)}), '
                       f'same basin {frac(basin_pre)} → {frac(basin)} — **{"met" if ok else "not met"}**')
    if out:
        w("The issue's criteria on the test split (means over the seeds finished):\n")
        w('\n'.join(out) + '\n')


def summary_section(w, R):
    lines = []
    for m in R.models:
        pre, _ = R.mean_dq(m, 'pretrained', 'test')
        if pre != pre:
            continue
        initial = [num(r['initial_dq']) for r in R.select(m, 'pretrained', 'test')]
        parts = []
        for meth in R.methods:
            v, sd = R.mean_dq(m, meth, 'test')
            if v == v:
                k = len(R.per_seed(m, meth, 'test'))
                parts.append(f'`{meth}` {pm(v, sd)} ({pct(1 - v / pre)}, {k} seed{"s" if k != 1 else ""})')
        # The fine-tuned model to keep: the lowest validation ΔQ over every method and seed (never the test split).
        best = None
        for meth in R.methods:
            for s in R.seeds:
                val = R.select(m, meth, 'val', s)
                if val:
                    v = stats(val)['mean']
                    if best is None or v < best[0]:
                        best = (v, meth, s)
        pick = ''
        if best:
            t = R.select(m, best[1], 'test', best[2])
            pick = (f' Chosen on validation: `{best[1]}` seed {best[2]} (validation ΔQ {f3(best[0])}; '
                    f'test {f3(stats(t)["mean"]) if t else "–"}).')
        lines.append(f"- **{m}** (test, {len(initial)} structures; unrelaxed {f3(statistics.mean(initial))}): pretrained {f3(pre)}; "
                     + ('; '.join(parts) if parts else 'no fine-tuned model evaluated yet') + '.' + pick)
    if lines:
        w('## Summary (computed from the tables below)\n')
        w('Mean test ΔQ (amu^½·Å) over the seeds finished, ± the standard deviation across seeds, and the cut relative to '
          'the pretrained model.\n')
        w('\n'.join(lines) + '\n')
        criteria(w, R)


def data_section(w, out, data):
    tables = []
    for tag, who in (('si', 'Si-only (SO3krates, SchNet)'), ('all', 'all species (CHGNet)')):
        d = Path(out) / 'data' / tag
        row = {}
        for split in ('train', 'val', 'test', 'unseen'):
            try:
                row[split] = re.findall(r'\bdefect=(\S+)', (d / f'{split}.extxyz').read_text())
            except OSError:
                row[split] = []
        frames = {}
        for t in ('traj-train', 'traj-val'):
            try:
                frames[t] = (d / f'{t}.extxyz').read_text().count('Lattice=')
            except OSError:
                frames[t] = 0
        if any(row.values()):
            tables.append((who, row, frames))
    if not tables:
        return
    w('## Data\n')
    w(f'GPAW-PBE relaxations of Si defect cells from `{data}` (protocol and provenance: its README.md), split by seed; the '
      'unseen split holds a defect kind no training split contains. Models that know Si only get the structures '
      'without carbon. Energy/force matching trains on every ionic step of the training structures\' relaxations and '
      'selects its epoch on those of the validation structures.\n')
    w('| structures | train | val | test | unseen kind | DFT frames (train / val) |')
    w('|---|---|---|---|---|---|')
    for who, row, frames in tables:
        def cell(k):
            kinds = row[k]
            if not kinds:
                return '0'
            return f"{len(kinds)} (" + ', '.join(f'{x} {kinds.count(x)}' for x in sorted(set(kinds))) + ')'
        w(f"| {who} | {cell('train')} | {cell('val')} | {cell('test')} | {cell('unseen')} | {frames['traj-train']} / {frames['traj-val']} |")
    w('')


def split_table(w, R, split):
    w(f'## {SPLITS[split]}: FIRE to the common fmax for every model\n')
    if split == 'val':
        w('The validation structures chose every training\'s best epoch and the model to keep, so these numbers are '
          'optimistic.\n')
    w('Each cell: mean over seeds ± standard deviation across seeds (one model per seed). Same basin: ΔQ < 1 amu^½·Å '
      'and the DFT structure\'s bond graph. Cut: 1 − mean ΔQ / mean ΔQ of the pretrained model.\n')
    w('| model | method | seeds | n | ΔQ mean | ΔQ median | < 0.1 (%) | < 0.3 (%) | same basin (%) | converged (%) | \\|ΔE_relax err\\| (eV) | cut | median per-structure improvement |')
    w('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for m in R.models:
        for meth in ['pretrained'] + R.methods:
            ps = R.per_seed(m, meth, split)
            if not ps:
                continue
            def c(key, fmt=f3):
                return pm(*over_seeds(ps, key), fmt=fmt)
            first = meth == 'pretrained'
            w(f"| {m} | {meth} | {'–' if first else len(ps)} | {ps[0]['n']} | {c('mean')} | {c('median')} | {c('f01', pctpt)} | "
              f"{c('f03', pctpt)} | {c('basin', pctpt)} | {c('conv', pctpt)} | {c('ere')} | {'–' if first else c('cut', pct)} | "
              f"{'–' if first else c('imp', pct)} |")
    w('')


def cost_section(w, R):
    w('## Cost\n')
    w('CPU time (user + system) and peak resident memory of each training process, summed over the sessions that worked '
      'on it (`summary.json`), and of the evaluations (`/usr/bin/time`); one thread per process on a shared 2-core '
      'machine, so CPU time is the steadier figure.\n')
    w('| model | method | trainings done | epochs | CPU h per training | CPU h (all seeds) | peak RSS training (MB) | CPU h evaluation |')
    w('|---|---|---|---|---|---|---|---|')
    total_train = total_eval = 0.0
    for m in R.models:
        for meth in ['pretrained'] + R.methods:
            sums = [s for s in R.summary(m, meth) if s] if meth != 'pretrained' else []
            cpu = [num(s.get('cpu_seconds')) / 3600 for s in sums]
            rss = [num(s.get('peak_rss_mb')) for s in sums]
            ev = 0.0
            for split in SPLITS:
                labels = ['pretrained'] if meth == 'pretrained' else [f'{meth}-s{s}' for s in R.seeds]
                for lb in labels:
                    c, _ = read_time(R.out / 'eval' / m / split / f'{lb}.time')
                    ev += c / 3600 if c == c else 0
            if not sums and ev == 0:
                continue
            total_train += sum(x for x in cpu if x == x)
            total_eval += ev
            epochs = sorted({str(s.get('epochs', '?')) for s in sums})
            w(f"| {m} | {meth} | {len(sums) if meth != 'pretrained' else '–'} | {', '.join(epochs) or '–'} | "
              f"{f3(statistics.mean(cpu)) if cpu else '–'} | {f3(sum(cpu)) if cpu else '–'} | {f3(max(rss)) if rss else '–'} | {f3(ev)} |")
    w(f'\nTotal so far: {f3(total_train)} CPU hours of training and {f3(total_eval)} of evaluation.\n')


def per_structure(w, R):
    w('## Per structure (test split; mean ΔQ over seeds)\n')
    meths = ['pretrained'] + R.methods
    w('| model | structure | kind | ΔQ initial | ' + ' | '.join(f'`{m}`' for m in meths) + ' |')
    w('|---|---|---|---|' + '---|' * len(meths))
    for m in R.models:
        structs = []
        for r in R.rows:
            if r['model'] == m and r['split'] == 'test' and r['method'] == 'pretrained' and r['structure'] not in structs:
                structs.append(r['structure'])
        for st in structs:
            first = next(r for r in R.rows if r['model'] == m and r['split'] == 'test' and r['structure'] == st)
            cells = []
            for meth in meths:
                v = [num(r['dq']) for r in R.select(m, meth, 'test') if r['structure'] == st]
                cells.append(f3(statistics.mean(v)) if v else '–')
            w(f"| {m} | {st} | {first['group']} | {f3(num(first['initial_dq']))} | " + ' | '.join(cells) + ' |')
    w('')


def memory_section(w, path):
    rows = read_json(path) if path else []
    if not rows:
        return
    r0 = rows[0]
    w('## Memory and cost of the gradient modes (64-site cell)\n')
    w(f"`BENCH_T={r0['T']} scripts/bench memory`: one gradient of ΔQ for a {r0['atoms']}-atom Si vacancy cell (2×2×2 diamond at "
      'a = 5.4912 Å, one atom removed, rattled by 0.1 Å rms) with the committed SO3krates model and FIRE (dt 0.1), each '
      'mode in its own process, one thread. Full and checkpoint unroll T steps; implicit relaxes to fmax 1e-6 eV/Å and '
      'solves one Hessian system by CG; guided:K records K steps and continues that relaxation to the minimum (its '
      'loss is W·ΔQ(x_K) + (1 − W)·ΔQ(x*), so losses and gradients differ from the T-step ones by design). Peak RSS: '
      'VmHWM of the gradient call; "above start" subtracts the resident memory before it.\n')
    w('| mode | peak RSS (MiB) | above start (MiB) | live heap peak (MiB) | wall s | CPU s | relaxer steps | tape nodes | loss | cos vs full |')
    w('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        c = r.get('cosine_vs_full')
        w(f"| {r['mode']} | {r['peak_mib']:.0f} | {r['peak_delta_mib']:.0f} | {r.get('peak_in_use_mib', float('nan')):.0f} | "
          f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['steps']} | {r['tape_nodes']} | {r['loss']:.6g} | {'–' if c is None else f'{c:.4f}'} |")
    w('')


def figures(out, rows, figdir, binary, md_dir):
    """Combined evaluate-style CSVs (seed-mean ΔQ per structure) for `relaxft report`, and the SVGs it writes."""
    if not binary or not figdir:
        return []
    fig_in = Path(out) / 'figures-data'
    fig_in.mkdir(exist_ok=True)
    inputs = [str(Path(out) / 'results.csv')]
    for m in sorted({r['model'] for r in rows}):
        sel = [r for r in rows if r['model'] == m and r['split'] == 'test']
        meths = [k for k in METHODS if any(r['method'] == k for r in sel)]
        if len(meths) < 2:
            continue
        structs = []
        for r in sel:
            if r['method'] == 'pretrained' and r['structure'] not in structs:
                structs.append(r['structure'])
        path = fig_in / f'{m}-test.csv'
        with open(path, 'w') as f:
            f.write('# models: ' + ' '.join(f'{i + 1}={m}:{k}' for i, k in enumerate(meths)) + '\n')
            f.write('structure,initial_dq,' + ','.join(f'dq_{i + 1}' for i in range(len(meths))) + '\n')
            for st in structs:
                init = next(r['initial_dq'] for r in sel if r['structure'] == st)
                vals = []
                for k in meths:
                    v = [num(r['dq']) for r in sel if r['method'] == k and r['structure'] == st]
                    vals.append(repr(statistics.mean(v)) if v else '')
                f.write(f'{st},{init},' + ','.join(vals) + '\n')
        inputs.append(str(path))
    figdir = Path(figdir)
    if figdir.is_dir():
        for p in figdir.glob('*.svg'):
            p.unlink()
    r = subprocess.run([binary, 'report', *inputs, '-o', str(Path(out) / 'report-figures.html'), '--svg-dir', str(figdir),
                        '--title', 'relaxft: fine-tuning through relaxations'], capture_output=True, text=True)
    if r.returncode != 0:
        print(f'results.py: relaxft report failed: {r.stderr.strip()}', file=sys.stderr)
        return []
    return [os.path.relpath(p.resolve(), md_dir) for p in sorted(figdir.glob('*.svg'))]


def markdown(R, md_path, figdir, binary, memory):
    md_dir = Path(md_path).resolve().parent
    settings = {p.stem: read_env(p) for p in sorted((R.out / 'settings').glob('*.env'))}
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True).stdout.strip()
        commit += ' with uncommitted changes' if dirty else ''
    except OSError:
        commit = '?'
    L = []
    w = L.append
    missing = R.missing()
    w('# Results: fine-tuning through relaxations against energy/force matching\n')
    if missing:
        w('> **Partial results.** The run has not finished: the tables hold what exists, with fewer seeds (the "seeds" '
          'column) or models than planned, and will change. Not finished yet:\n>')
        for line in missing:
            w(f'> - {line}')
        w('')
    if R.plan.get('dataset') == 'tiny':
        w('> **Tiny-set quick run** (8-site cells, 1–3 structures per split): it shows that the pipeline runs end to end, '
          'nothing about the methods.\n')
    w(f'Generated by `scripts/experiments/results.py` from `scripts/experiments/reproduce.sh` ({datetime.date.today().isoformat()}, '
      f'commit {commit}). Every number comes from the per-structure file `results.csv` in the run directory (not committed; '
      'the commands below rebuild it).\n')
    notes = R.out / 'notes.md'
    if notes.is_file():
        w('## Notes on this run\n')
        w(notes.read_text().strip() + '\n')
    summary_section(w, R)
    data_section(w, R.out, R.plan.get('data', 'Fixtures/data/si-defects'))
    w('## What was run\n')
    w('| method | what |\n|---|---|')
    for k in ['pretrained'] + R.methods:
        w(f'| `{k}` | {METHODS.get(k, "")} |')
    w('')
    for m in R.models:
        try:
            settings.setdefault(m, {})['code'] = (R.out / 'bin' / m / 'commit.txt').read_text().strip()
        except OSError:
            pass
    if settings:
        w('Settings (stored per model at its first start, with the commit of the relaxft it runs; `common` is the '
          'evaluation protocol, FIRE for every model):\n')
        w('| | ' + ' | '.join(settings) + ' |')
        w('|---|' + '---|' * len(settings))
        keys = []
        for s in settings.values():
            keys += [k for k in s if k not in keys]
        for k in keys:
            w(f'| {k} | ' + ' | '.join(s.get(k, '') for s in settings.values()) + ' |')
        w(f"\nSeeds: {' '.join(R.seeds)} (batch order; one model per seed). BPTT-type trainings: one structure per step, "
          'gradient norm clipped at 10, best epoch by validation ΔQ under the method\'s own relaxation (T FIRE steps for '
          '`bptt`, FIRE to the common fmax for `implicit` and `guided`).\n')
    for split in SPLITS:
        if any(r['split'] == split for r in R.rows):
            split_table(w, R, split)
    cost_section(w, R)
    per_structure(w, R)
    memory_section(w, memory)
    svgs = figures(R.out, R.rows, figdir, binary, md_dir)
    if svgs:
        w('## Figures\n')
        w('From `relaxft report` on `results.csv` (ΔQ per structure, every seed) and the seed-mean test ΔQ per structure.\n')
        for p in svgs:
            w(f'![{Path(p).stem}]({p})\n')
    w('## Reproduce\n')
    w('```sh')
    w('nice -n 15 env THREADS=1 scripts/experiments/reproduce.sh --models "so3krates schnet"   # resumable: run it again to continue')
    w('scripts/experiments/reproduce.sh --status                                            # what is done, interrupted, missing')
    w('nice -n 15 env THREADS=2 BPTT_EPOCHS=… EF_EPOCHS=… scripts/experiments/reproduce.sh --models chgnet')
    w('BENCH_T=60 BENCH_JSON=runs/reproduce/memory.json scripts/bench memory                # the memory table')
    w('scripts/experiments/reproduce.sh --report                                            # this document, from what exists')
    w('```\n')
    Path(md_path).parent.mkdir(parents=True, exist_ok=True)
    Path(md_path).write_text('\n'.join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('out')
    ap.add_argument('--markdown')
    ap.add_argument('--figures')
    ap.add_argument('--binary', help='relaxft executable (for the figures)')
    ap.add_argument('--memory', help='JSON written by BENCH_JSON=… scripts/bench memory')
    a = ap.parse_args()
    rows = collect(a.out)
    if not rows:
        sys.exit(f'results.py: no evaluations in {a.out}/eval yet')
    with open(Path(a.out) / 'results.csv', 'w', newline='') as f:
        wr = csv.DictWriter(f, fieldnames=FIELDS, lineterminator='\n')
        wr.writeheader()
        wr.writerows(rows)
    print(f'results.py: {len(rows)} rows → {a.out}/results.csv', file=sys.stderr)
    if a.markdown:
        markdown(Results(a.out, rows), a.markdown, a.figures, a.binary, a.memory)
        print(f'results.py: wrote {a.markdown}', file=sys.stderr)


if __name__ == '__main__':
    main()
