#!/bin/sh
# run.sh -- bench_cron plus the same corpus through python3-croniter.
# Usage: bench/cron/run.sh [path/to/bench_cron]   (default: build/bench/cron/bench_cron)
# Prints our median ns per next-fire, croniter's, and the ratio. Numbers only.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../build/bench/cron/bench_cron}
out=$("$bin" "$here/corpus.txt")
echo "$out"
ours=$(echo "$out" | awk '/^UTC/ {print $3}')
/usr/bin/python3 - "$here/corpus.txt" "$ours" <<'PY'
import datetime, random, statistics, sys, time
from croniter import croniter
exprs = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
ours = float(sys.argv[2])
rnd = random.Random(1)
samples = []
for e in exprs:
    for _ in range(8):
        t = rnd.randrange(631152000, 2145916800)
        it = croniter(e, datetime.datetime.fromtimestamp(t, datetime.timezone.utc))
        t0 = time.perf_counter_ns()
        for _ in range(16):
            it.get_next(float)
        samples.append((time.perf_counter_ns() - t0) / 16)
med = statistics.median(samples)
print("croniter (UTC)     median %7.0f ns  -> ours is %.0fx faster" % (med, med / ours))
PY
