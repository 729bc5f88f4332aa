#!/usr/bin/env python3
"""Per-kernel GPU time from Nsight Compute's CSV (`ncu --metrics gpu__time_duration.sum --csv`).

    python3 bench/kernel_times.py OUT_DIR "CASE1;CASE2;..."   # OUT_DIR/times_N.csv, N from 1
    python3 bench/kernel_times.py FILE.csv                      # one file

For each case, every launch in order (up to 150) with its duration in microseconds, then every
kernel (template arguments kept, parameters dropped) with its launches and mean duration: one
instance can serve two stages (HISA's block and token stages are both the gathered kernel), so
the launch order tells them apart.
"""
import csv
import io
import os
import sys

_UNIT_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
            "s": 1e6, "second": 1e6}


def launches(text):
    """[(kernel, us)] in launch order, from ncu's CSV text."""
    start = text.find('"ID"')
    if start < 0:
        return []
    seq = []
    for row in csv.DictReader(io.StringIO(text[start:])):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row.get("Kernel Name", "?")
        # The parameter list goes; template arguments stay (they name the instance).
        depth, cut = 0, len(name)
        for i, ch in enumerate(name):
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        name = name[:cut].removeprefix("void ").strip()
        unit = row.get("Metric Unit", "nsecond").strip()
        value = float(row["Metric Value"].replace(",", ""))
        seq.append((name, value * _UNIT_US.get(unit, 1e-3)))
    return seq


def report(label, text):
    seq = launches(text)
    print(f"{label}:")
    if not seq:
        print("  no kernels recorded")
        return
    for i, (name, us) in enumerate(seq[:150]):
        print(f"  #{i:<3d} {us:10.2f} us  {name[:120]}")
    agg = {}
    for name, us in seq:
        a = agg.setdefault(name, [0, 0.0])
        a[0] += 1
        a[1] += us
    rows = [(k, v[0], v[1]) for k, v in agg.items()]
    print("  by kernel:")
    for name, n, total in rows:
        print(f"  {n:4d} x {total / n:10.2f} us = {total:11.1f} us  {name[:120]}")
    print(f"  all kernels: {sum(r[2] for r in rows):.1f} us")


def main(argv):
    if len(argv) == 2 and argv[1].endswith(".csv"):
        report(argv[1], open(argv[1]).read())
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, cases = argv[1], argv[2].split(";")
    for n, case in enumerate(cases, 1):
        path = os.path.join(out, f"times_{n}.csv")
        if os.path.exists(path):
            report(f"case {n} ({case.strip()})", open(path).read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
