#!/usr/bin/python3
"""Differential test: scheduler/ (via cron_cli) against Debian's python3-croniter.

Run with /usr/bin/python3 (Debian's croniter 1.3.5 lives there, not in pyenv):
    /usr/bin/python3 tests/cron/differential.py --cli build/tests/cron/cron_cli

For N random expressions of our grammar (docs/schedules.md), each from a random instant
between 1990 and 2037, the next 5 fires are compared in UTC and in one other
zone (fixed-offset or DST). Exit 0 = zero mismatches, 1 = mismatches, 77 = skip
(croniter not installed).

Where our contract knowingly differs from croniter (these cases are skipped
and counted, never compared):
  1. DST. Ours: docs/schedules.md §10 (hour field starting with '*' follows elapsed
     time; other hour fields fire each local time once, gap -> end of gap,
     fold -> first occurrence). croniter 1.3.5 computes on naive local time and
     then applies an ad-hoc "lag" correction, which repeats/skips fires
     differently around transitions. Cases whose window [from, last fire]
     (+/- 1 day) contains an offset change are skipped; the DST contract is
     checked instead by the brute-force oracle in tests/unit/test_scheduler_cron.c.
  2. DOM/DOW OR rule. Ours: OR applies when neither field is exactly '*'
     (docs/schedules.md §6, Vixie/POSIX). croniter (default day_or=True) first expands
     each field and rewrites a field covering every value (e.g. '1-31', '*/1',
     '0-6', '0-7', 'SUN-SAT') to '*', so '0 0 1-31 * MON' is "Mondays" for
     croniter but "every day" for us. Cases where DOM or DOW is not '*' yet
     covers every value, while the other is restricted, are skipped.
  3. Grammar: croniter also accepts things we reject (6 fields with seconds,
     'L', '#', 'H', steps larger than the field). The generator only produces
     our grammar, so these never reach croniter.
  4. With the OR rule, a day-of-month that never occurs in the chosen months
     (e.g. '0 0 31 SEP SUN'): we fire on the day-of-week alone (the OR rule);
     croniter 1.3.5 computes the two halves separately and raises
     "failed to find next date" for the impossible half. Skipped.
  5. croniter 1.3.5 bug: when the day-of-month set holds a day the current
     month lacks (29-31), rolling into the next month skips its first matching
     day ('38 0 1,31 * *' from 2018-02-16 gives 03-31 instead of 03-01).
     Detected per case: the first differing fire is ours, earlier, and an
     independent Python predicate confirms it matches. Counted, not compared.
  6. Expressions that can never fire ('0 0 30 2 *') are rejected by our
     parser by design (docs/schedules.md §9); croniter searches and raises. Not generated.
"""
import argparse
import bisect
import datetime
import random
import subprocess
import sys
import time

try:
    from croniter import croniter
    import zoneinfo
except ImportError:  # pragma: no cover
    print("croniter not available: skipping")
    sys.exit(77)

FIELDS = [  # name, lo, hi
    ("minute", 0, 59), ("hour", 0, 23), ("dom", 1, 31), ("month", 1, 12),
    ("dow", 0, 7),
]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
          "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
ZONES_FIXED = ["Asia/Kolkata", "Asia/Tokyo", "Etc/GMT+5"]
ZONES_DST = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
             "America/Sao_Paulo"]
T0 = 631152000   # 1990-01-01
T1 = 2145916800  # 2038-01-01


def rand_case(rnd, s):
    return "".join(c.upper() if rnd.random() < 0.5 else c for c in s)


def value_text(rnd, f, v):
    if f == 3 and rnd.random() < 0.3:
        return rand_case(rnd, MONTHS[v - 1])
    if f == 4 and v <= 6 and rnd.random() < 0.3:
        return rand_case(rnd, DAYS[v])
    return str(v)


def gen_item(rnd, f):
    """Returns (text, set of values)."""
    _, lo, hi = FIELDS[f]
    k = rnd.randrange(7)
    if k == 0:
        return "*", set(range(lo, hi + 1))
    if k == 1:
        v = rnd.randint(lo, hi)
        return value_text(rnd, f, v), {v}
    if k == 2:
        a = rnd.randint(lo, hi)
        b = rnd.randint(a, min(hi, a + rnd.choice([1, 3, 8, 30])))
        return value_text(rnd, f, a) + "-" + value_text(rnd, f, b), set(range(a, b + 1))
    if k == 3:
        n = rnd.randint(1, max(1, (hi - lo + 1) // 2))
        return "*/%d" % n, set(range(lo, hi + 1, n))
    if k == 4:
        a = rnd.randint(lo, hi)
        b = rnd.randint(a, hi)
        n = rnd.randint(1, max(1, (hi - lo + 1) // 3))
        return "%s-%s/%d" % (value_text(rnd, f, a), value_text(rnd, f, b), n), \
            set(range(a, b + 1, n))
    if k == 5:
        a = rnd.randint(lo, hi)
        n = rnd.randint(1, max(1, (hi - lo + 1) // 3))
        return "%s/%d" % (value_text(rnd, f, a), n), set(range(a, hi + 1, n))
    vals = rnd.sample(range(lo, hi + 1), rnd.randint(2, 4))
    return ",".join(value_text(rnd, f, v) for v in vals), set(vals)


def gen_field(rnd, f):
    if rnd.random() < 0.15 and f >= 2:
        return "*", set(range(FIELDS[f][1], FIELDS[f][2] + 1))
    if rnd.random() < 0.8:
        return gen_item(rnd, f)
    parts = [gen_item(rnd, f) for _ in range(rnd.randint(2, 3))]
    return ",".join(p[0] for p in parts), set().union(*(p[1] for p in parts))


PRESETS = ["@yearly", "@annually", "@monthly", "@weekly", "@daily",
           "@midnight", "@hourly"]


def gen_expr(rnd):
    """Returns (text, skip reason or None)."""
    if rnd.random() < 0.02:
        return rnd.choice(PRESETS), None, None
    texts, sets = [], []
    for f in range(5):
        t, s = gen_field(rnd, f)
        texts.append(t)
        sets.append(s)
    dom_t, dow_t = texts[2], texts[4]
    dom_full = len(sets[2]) == 31
    dow_full = len({v % 7 for v in sets[4]}) == 7
    skip = None
    if (dom_t != "*" and dom_full and dow_t != "*") or \
       (dow_t != "*" and dow_full and dom_t != "*"):
        skip = "dom-dow-full"  # known difference 2
    dim = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30,
           10: 31, 11: 30, 12: 31}
    if dom_t != "*" and dow_t != "*" and \
       not any(d <= dim[m] for d in sets[2] for m in sets[3]):
        skip = "dom-never-in-month"  # known difference 4
    if dow_t == "*" and not any(d <= dim[m] for d in sets[2] for m in sets[3]):
        skip = "never-fires"  # rejected by our parser by design
    return " ".join(texts), skip, (texts, sets)


def matches(info, t, zone):
    """Independent predicate: does instant t match in zone's local time?"""
    texts, sets = info
    d = datetime.datetime.fromtimestamp(t, zoneinfo.ZoneInfo(zone))
    dow = (d.weekday() + 1) % 7
    dom_ok = d.day in sets[2]
    dow_ok = dow in {v % 7 for v in sets[4]}
    if texts[2] != "*" and texts[4] != "*":
        day_ok = dom_ok or dow_ok
    else:
        day_ok = dom_ok and dow_ok
    return (d.second == 0 and d.minute in sets[0] and d.hour in sets[1]
            and d.month in sets[3] and day_ok)


def croniter_rollover_bug(info, zone, ours, theirs):
    """Known difference 5: croniter 1.3.5 skips the first matching day of a
    month when the day-of-month set holds a day the previous month lacks
    ('38 0 1,31 * *' from Feb 16 gives Mar 31, not Mar 1). True when the first
    difference is a fire we give earlier, that fire is a genuine match, and the
    day-of-month set has a day > 28."""
    if info is None or max(info[1][2]) <= 28:
        return False
    for a, b in zip(ours, theirs):
        if a != b:
            return a < b and matches(info, a, zone)
    return False


def transitions(zone):
    """Offset-change instants of zone between 1989 and 2040 (daily scan, then
    bisection), for skipping DST windows (known difference 1)."""
    tz = zoneinfo.ZoneInfo(zone)

    def off(t):
        return datetime.datetime.fromtimestamp(t, tz).utcoffset()
    out = []
    t, prev = T0 - 366 * 86400, None
    prev = off(t)
    while t < T1 + 3 * 366 * 86400:
        o = off(t + 86400)
        if o != prev:
            lo, hi = t, t + 86400
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if off(mid) == prev:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
            prev = o
        t += 86400
    return out


def croniter_fires(expr, zone, start, n=5):
    tz = zoneinfo.ZoneInfo(zone)
    it = croniter(expr, datetime.datetime.fromtimestamp(start, tz))
    return [int(it.get_next(float)) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=20260101)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    started = time.time()
    trans = {z: transitions(z) for z in ZONES_DST}

    cases = []  # (expr, zone, from)
    skipped = {"dom-dow-full": 0, "dom-never-in-month": 0, "never-fires": 0,
               "dst-window": 0, "croniter-rollover-bug": 0}
    while len(cases) < 2 * args.count:
        expr, skip, info = gen_expr(rnd)
        if skip:
            skipped[skip] += 1
            continue
        start = rnd.randrange(T0, T1)
        if rnd.random() < 0.1:
            start -= start % 60  # exactly on a minute
        cases.append((expr, "UTC", start, info))
        zone = rnd.choice(ZONES_FIXED + ZONES_DST)
        cases.append((expr, zone, start, info))

    req = "".join("next\t%s\t%s\t%d\t5\n" % c[:3] for c in cases)
    out = subprocess.run([args.cli], input=req, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    if len(out) != len(cases):
        print("cron_cli answered %d lines for %d requests" % (len(out), len(cases)))
        return 1

    mismatches = compared = 0
    for (expr, zone, start, info), line in zip(cases, out):
        if not line.startswith("OK"):
            mismatches += 1
            print("MISMATCH parse: %r: %s" % (expr, line))
            continue
        ours = [int(x) for x in line.split()[1:]]
        if zone in trans:
            tl = trans[zone]
            last = max(ours[-1] if ours else start, start)
            i = bisect.bisect_left(tl, start - 86400)
            if i < len(tl) and tl[i] <= last + 86400:
                skipped["dst-window"] += 1
                continue
        try:
            theirs = croniter_fires(expr, zone, start)
        except Exception as exc:  # noqa: BLE001
            mismatches += 1
            print("MISMATCH croniter error: %r: %s" % (expr, exc))
            continue
        if zone in trans:  # croniter's answer must also stay clear of DST
            tl = trans[zone]
            i = bisect.bisect_left(tl, start - 86400)
            if i < len(tl) and tl[i] <= max(theirs) + 86400:
                skipped["dst-window"] += 1
                continue
        compared += 1
        if ours != theirs and croniter_rollover_bug(info, zone, ours, theirs):
            skipped["croniter-rollover-bug"] += 1
            compared -= 1
            continue
        if ours != theirs:
            mismatches += 1
            if mismatches <= 20:
                print("MISMATCH %r in %s from %d:\n  ours     %s\n  croniter %s"
                      % (expr, zone, start, ours, theirs))
    elapsed = time.time() - started
    print("differential: %d expressions, %d cases compared (5 fires each), "
          "%d mismatches, skipped %s, %.1f s"
          % (args.count, compared, mismatches, skipped, elapsed))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
