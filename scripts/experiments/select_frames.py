#!/usr/bin/env python3
"""Copy the frames of an extended-XYZ file whose info keys match, unchanged (Python 3 stdlib only).

    select_frames.py IN.extxyz OUT.extxyz [--keep KEY=PAT[,PAT…]]… [--drop KEY=PAT[,PAT…]]… [--species Si[,C]]

--keep: every --keep must match (a frame matches KEY=PATS when its info value of KEY matches one of the
shell-style patterns, e.g. defect=vacancy,rattled or seed=*2); --drop: frames matching any --drop are left
out; --species: only frames whose atoms are all of these elements (e.g. for a model that knows Si only).
Prints the number of frames written; an empty selection writes no file and exits with code 1.
Frames are copied line by line, so every number keeps its exact text.
"""
import argparse
import fnmatch
import re
import sys

INFO = re.compile(r'(\w+)=("[^"]*"|\S+)')


def frames(path):
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        yield lines[i:i + n + 2]
        i += n + 2


def rule(text):
    key, _, pats = text.partition('=')
    if not key or not pats:
        sys.exit(f'select_frames: expected KEY=PATTERN[,PATTERN…], got {text!r}')
    return key, pats.split(',')


def matches(info, key, pats):
    v = info.get(key)
    return v is not None and any(fnmatch.fnmatchcase(v, p) for p in pats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('input')
    ap.add_argument('output')
    ap.add_argument('--keep', action='append', default=[], type=rule)
    ap.add_argument('--drop', action='append', default=[], type=rule)
    ap.add_argument('--species', default=None)
    a = ap.parse_args()
    allowed = set(a.species.split(',')) if a.species else None
    out = []
    for fr in frames(a.input):
        info = {k: v.strip('"') for k, v in INFO.findall(fr[1])}
        if not all(matches(info, k, p) for k, p in a.keep):
            continue
        if any(matches(info, k, p) for k, p in a.drop):
            continue
        if allowed is not None and any(line.split()[0] not in allowed for line in fr[2:]):
            continue
        out.append('\n'.join(fr) + '\n')
    print(len(out))
    if not out:
        return 1
    with open(a.output, 'w') as f:
        f.write(''.join(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
