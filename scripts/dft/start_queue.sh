#!/bin/sh
# Start the DFT queue in the background (survives the shell; niced; logs to
# scripts/dft/work/queue.log). Extra arguments go to run_queue.py.
cd "$(dirname "$0")" || exit 1
mkdir -p work
if ! /usr/bin/python3 -c 'import gpaw' 2>/dev/null; then
    echo "GPAW missing: apt-get install -y gpaw gpaw-data" >&2; exit 1
fi
setsid nohup nice -n 19 /usr/bin/python3 run_queue.py "$@" >> work/queue.log 2>&1 < /dev/null &
echo "queue started, pid $! (log: scripts/dft/work/queue.log)"
