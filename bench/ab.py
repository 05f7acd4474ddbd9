#!/usr/bin/env python3
"""A/B wall time of `flowmesh run --distributed` for two or more builds, runs alternating.

Usage: python3 bench/ab.py GRAPH.yaml RUNS BINARY [BINARY ...]
  e.g. cp target/release/flowmesh /tmp/fm_before; (change, rebuild);
       python3 bench/ab.py bench/net-cf32.yaml 6 /tmp/fm_before target/release/flowmesh
A BINARY may be a wrapper script (to set environment variables for one side).
Prints min / median / max seconds per binary, the method behind the "wall time,
N alternating runs" tables in docs/benchmarks.md.
"""
import statistics, subprocess, sys, time


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    graph, runs, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    times = {b: [] for b in bins}
    for _ in range(runs):
        for b in bins:
            t0 = time.perf_counter()
            subprocess.run([b, "run", "-q", "--distributed", graph], check=True)
            times[b].append(time.perf_counter() - t0)
    for b, xs in times.items():
        print(f"{b}: {min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f} s")


if __name__ == "__main__":
    main()
