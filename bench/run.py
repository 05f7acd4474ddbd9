#!/usr/bin/env python3
"""FlowMesh benchmarks, each beside its peer from the same run.

Usage: python3 bench/run.py [chain] [memory] [cpu] [net] [net-crc] [tags] [latency] [scale] [--runs 5]
  chain   bench/chain-{f32,cf32}.yaml vs bench/peers/gnuradio/gr_chain.py, alternating runs;
          plus the same graph with constants 0.999 (f32) and 0.6+0.8j (cf32), the same graph with a
          source that writes every item on both sides (FlowMesh signal_source `const` vs GNU Radio
          sig_source GR_CONST_WAVE), and the SPSC ring ceiling from bench/peers/limits/spsc_bw.c.
  memory  peak resident memory of `flowmesh run examples/spectrum-survey.yaml`.
  net     bench/net-{f32,cf32}.yaml with `flowmesh run --distributed` (CRC on and off) vs
          bench/peers/gnuradio/gr_zmq.py (ZeroMQ PUSH/PULL), alternating; the same edge and peer with
          a source that writes every item on both sides (rows "writing source"); raw TCP from
          bench/peers/limits/sock_bw.c at 128 KiB and at FlowMesh's frame size, and from a 32 MiB
          ring (bench/peers/limits/ring_tcp.c, 512 KiB writes: a net_sink's input buffer at the default
          retention); and, reported separately, the same edge over a Unix-domain socket (`--unix`)
          beside raw Unix sockets. `net-crc` runs only the CRC on/off comparison.
  tags    bench/net-tags.yaml (one tag per 1024 items, every offset checked) vs the same graph with one
          tag in all (and bench/net-counter.yaml, no tagger, for reference).
  latency bench/net-latency.yaml: p50/p99 through one edge at 10 Msps.
  scale   bench/scale.yaml: messages/s through a scalable segment (32 KiB messages, results without the
          payload) with 1 and 2 replicas under `flowmesh run --distributed`, beside the same graph in one
          process (`flowmesh run`), at 0 and 1000 us of work per message; alternating runs.
  cpu     CPU use of bench/tone-throttled.yaml (tone -> filter -> file, throttled to 1 Msps, 10 s)
          and the throttle's achieved rate.
The figure for FlowMesh is items / wall time of the whole `flowmesh run` process.
Every peer script and probe is in bench/peers/ (GNU Radio 3.10: `apt-get install gnuradio`).
Prints Markdown table rows for docs/benchmarks.md, headed by the CPU model the run was on.
"""
import os, re, resource, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
FM = os.path.join(ROOT, "target", "release", "flowmesh")
GR_PY = "/usr/bin/python3"  # Debian's python3 carries the gnuradio bindings


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def stats(xs):
    return f"{min(xs):.0f} / {statistics.median(xs):.0f} / {max(xs):.0f}"


def fm_run(path, n):
    t0 = time.perf_counter()
    sh([FM, "run", "-q", path])
    return n / (time.perf_counter() - t0) / 1e6


def gr_run(typ, n, source="null"):
    out = sh([GR_PY, os.path.join(PEERS, "gnuradio", "gr_chain.py"), "--type", typ,
              "--source", source, "--stages", "4", "--n", str(n), "--repeat", "1"]).stdout
    return float(re.search(r"Msps min/med/max = ([\d.]+)/", out).group(1))


def variant(path, old, new):
    text = open(path).read()
    assert old in text, f"{old!r} not in {path}"
    text = text.replace(old, new)
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write(text)
    f.close()
    return f.name


def chain(runs):
    subprocess.run(["gcc", "-O2", "-pthread", "-o", "/tmp/fm_spsc_bw",
                    os.path.join(PEERS, "limits", "spsc_bw.c")], check=True)
    ring = [float(re.search(r": ([\d.]+) GB/s", sh(["/tmp/fm_spsc_bw", "16", "256", "16"]).stdout).group(1))
            for _ in range(3)]
    ring_gbs = statistics.median(ring)
    print(f"SPSC ring ceiling (spsc_bw 16 256 16, median of 3): {ring_gbs:.2f} GB/s")
    print("| graph | N | FlowMesh Msps min/med/max | GNU Radio Msps min/med/max | ratio (medians) | FlowMesh GB/s per edge / ring ceiling |")
    print("|---|---|---|---|---|---|")
    for typ, gtyp, n, size, const, other in [
        ("f32", "f", 1_000_000_000, 4, "constant: 1.0}", "constant: 0.999}"),
        ("cf32", "c", 500_000_000, 8, 'constant: "1.0+0j"}', 'constant: "0.6+0.8j"}'),
    ]:
        path = os.path.join(ROOT, "bench", f"chain-{typ}.yaml")
        alt = variant(path, const, other)
        writing = writing_source(path, typ)
        fm, gr, fm_alt, fm_w, gr_w = [], [], [], [], []
        for _ in range(runs):
            fm.append(fm_run(path, n))
            gr.append(gr_run(gtyp, n))
            fm_alt.append(fm_run(alt, n))
            fm_w.append(fm_run(writing, n))
            gr_w.append(gr_run(gtyp, n, "const"))
        os.unlink(alt)
        os.unlink(writing)
        med = statistics.median(fm)
        frac = med * 1e6 * size / 1e9 / ring_gbs
        print(f"| chain-{typ} (x1.0) | {n:.0e} | {stats(fm)} | {stats(gr)} | {med / statistics.median(gr):.2f}x | {med * size / 1e3:.2f} GB/s = {frac:.0%} |")
        print(f"| chain-{typ} ({other.split(': ')[1].rstrip('}')}) | {n:.0e} | {stats(fm_alt)} | (same GR runs) | {statistics.median(fm_alt) / statistics.median(gr):.2f}x | {statistics.median(fm_alt) / med - 1:+.1%} vs x1.0 |")
        wm = statistics.median(fm_w)
        print(f"| chain-{typ}, writing source (x1.0) | {n:.0e} | {stats(fm_w)} | {stats(gr_w)} | {wm / statistics.median(gr_w):.2f}x | {wm * size / 1e3:.2f} GB/s = {wm * 1e6 * size / 1e9 / ring_gbs:.0%} |")


def writing_source(path, typ):
    """The graph at `path` with its null_source replaced by a source that writes
    every item on every call (signal_source `const`, amplitude 1), like GNU
    Radio's sig_source with GR_CONST_WAVE in the peer's `--source const`."""
    return variant(path, f"{{kind: null_source, params: {{type: {typ}}}",
                   f"{{kind: signal_source, params: {{type: {typ}, waveform: const, samp_rate: 1e6, amplitude: 1.0}}")


def child_usage(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return p, wall, cpu, after.ru_maxrss


def memory():
    p, wall, cpu, maxrss = child_usage([FM, "run", os.path.join(ROOT, "examples", "spectrum-survey.yaml")])
    hwm = re.search(r"peak memory ([\d.]+) MB", p.stderr)
    print(f"spectrum-survey: VmHWM {hwm.group(1) if hwm else '?'} MB (rusage maxrss {maxrss / 1024:.1f} MB), "
          f"wall {wall:.2f} s, {len(p.stdout.splitlines())} detection lines")


def cpu(runs):
    pct, err = [], []
    for _ in range(runs):
        # A fresh output file: rewriting the previous run's 80 MB after a
        # truncate makes ext4 flush it on close (24-42 ms), which is not the
        # pipeline's work.
        if os.path.exists("/tmp/flowmesh-tone-throttled.cf32"):
            os.unlink("/tmp/flowmesh-tone-throttled.cf32")
        p, wall, cpu_s, _ = child_usage([FM, "run", os.path.join(ROOT, "bench", "tone-throttled.yaml")])
        ran = float(re.search(r"finished in ([\d.]+) s", p.stderr).group(1))
        pct.append(cpu_s / wall * 100)
        err.append((1e7 / ran / 1e6 - 1) * 100)
        print(f"tone-throttled (1 Msps, 1e7 items): graph ran {ran:.3f} s -> {1e7 / ran / 1e6:.4f} Msps "
              f"(throttle error {err[-1]:+.2f}%); process wall {wall:.3f} s, "
              f"CPU {cpu_s:.3f} s = {pct[-1]:.2f}% of one core")
    print(f"tone-throttled over {runs} runs: CPU {min(pct):.2f} / {statistics.median(pct):.2f} / {max(pct):.2f} % of one core; "
          f"throttle error {min(err):+.2f} / {statistics.median(err):+.2f} / {max(err):+.2f} %")


def fm_dist(path, n, extra=()):
    t0 = time.perf_counter()
    p = subprocess.run([FM, "run", "--distributed", *extra, "-q", path], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        sys.exit(f"{path} failed:\n{p.stderr}")
    return n / (time.perf_counter() - t0) / 1e6, p.stderr


def gr_zmq(typ, n, source="null"):
    out = sh([GR_PY, os.path.join(PEERS, "gnuradio", "gr_zmq.py"), "run", "--type", typ, "--source", source,
              "--pattern", "push", "--n", str(n), "--repeat", "1"]).stdout
    return float(re.search(r"Msps min/med/max = ([\d.]+)/", out).group(1))


def net(runs):
    subprocess.run(["gcc", "-O2", "-o", "/tmp/fm_sock_bw", os.path.join(PEERS, "limits", "sock_bw.c")], check=True)
    # 128 KiB (the limits probe's default) and FlowMesh's own write: a 512 KiB frame + its 24-byte header.
    for mode, chunk in (("tcp", 131072), ("tcp", 524288 + 24), ("unix", 524288 + 24)):
        r = [float(re.search(r": ([\d.]+) GB/s", sh(["/tmp/fm_sock_bw", mode, str(chunk), "8192"]).stdout).group(1))
             for _ in range(3)]
        print(f"raw {mode} socket, {chunk}-byte writes (sock_bw, 3 runs): {stats([x * 1000 for x in r])} MB/s")
    # The same, but sending from a 32 MiB ring (a net_sink's input buffer at
    # the default retention) instead of one cache-hot chunk.
    subprocess.run(["gcc", "-O2", "-o", "/tmp/fm_ring_tcp", os.path.join(PEERS, "limits", "ring_tcp.c")], check=True)
    r = [float(re.search(r": ([\d.]+) GB/s", sh(["/tmp/fm_ring_tcp", str(32 << 20), "524288", "8192"]).stdout).group(1))
         for _ in range(3)]
    print(f"raw tcp socket, 524288-byte writes from a 32 MiB ring (bench/peers/limits/ring_tcp.c, 3 runs): {stats([x * 1000 for x in r])} MB/s")
    print("| edge | N | FlowMesh CRC on Msps min/med/max | FlowMesh CRC off | GNU Radio ZeroMQ PUSH/PULL | ratio (CRC on, medians) | GB/s (CRC on) | FlowMesh over a Unix socket (`--unix`, CRC on; reported separately) | FlowMesh, retention 1 MiB (not the default; CRC on) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for typ, gtyp, n, size in [("f32", "f", 2_000_000_000, 4), ("cf32", "c", 1_000_000_000, 8)]:
        path = os.path.join(ROOT, "bench", f"net-{typ}.yaml")
        off = crc_off(path)
        # A 1 MiB retention keeps the sender's ring (2 x retention) in L2.
        small = variant(path, "  connections:", "  runtime: {network: {retentionBytes: 1048576}}\n  connections:")
        writing = writing_source(path, typ)
        writing_off = crc_off(writing)
        on_r, off_r, gr, unix, small_r, w_on, w_off, w_gr = [], [], [], [], [], [], [], []
        for _ in range(runs):
            on_r.append(fm_dist(path, n)[0])
            off_r.append(fm_dist(off, n)[0])
            gr.append(gr_zmq(gtyp, n))
            unix.append(fm_dist(path, n, ("--unix",))[0])
            small_r.append(fm_dist(small, n)[0])
            w_on.append(fm_dist(writing, n)[0])
            w_off.append(fm_dist(writing_off, n)[0])
            w_gr.append(gr_zmq(gtyp, n, "const"))
        for f in (off, small, writing, writing_off):
            os.unlink(f)
        med = statistics.median(on_r)
        um = statistics.median(unix)
        sm = statistics.median(small_r)
        wm = statistics.median(w_on)
        print(f"| net-{typ} | {n:.1e} | {stats(on_r)} | {stats(off_r)} | {stats(gr)} | {med / statistics.median(gr):.2f}x | {med * size / 1e3:.2f} "
              f"| {stats(unix)} ({um / statistics.median(gr):.2f}x, {um * size / 1e3:.2f} GB/s) "
              f"| {stats(small_r)} ({sm / statistics.median(gr):.2f}x) |")
        print(f"| net-{typ}, writing source | {n:.1e} | {stats(w_on)} | {stats(w_off)} | {stats(w_gr)} | {wm / statistics.median(w_gr):.2f}x | {wm * size / 1e3:.2f} | | |")


def crc_off(path):
    return variant(path, "  connections:", "  runtime: {network: {crc: false}}\n  connections:")


def net_crc(runs):
    """CRC on against CRC off, alternating, null and writing sources: the cost of the CRC alone."""
    print("| edge | source | N | CRC on Msps min/med/max | CRC off | on / off (medians) |")
    print("|---|---|---|---|---|---|")
    for typ, n in [("f32", 2_000_000_000), ("cf32", 1_000_000_000)]:
        path = os.path.join(ROOT, "bench", f"net-{typ}.yaml")
        writing = writing_source(path, typ)
        for name, g in (("null", path), ("writing", writing)):
            off = crc_off(g)
            on_r, off_r = [], []
            for _ in range(runs):
                on_r.append(fm_dist(g, n)[0])
                off_r.append(fm_dist(off, n)[0])
            os.unlink(off)
            print(f"| net-{typ} | {name} | {n:.1e} | {stats(on_r)} | {stats(off_r)} | {statistics.median(on_r) / statistics.median(off_r):.3f} |")
        os.unlink(writing)


def tags(runs):
    # Baseline: the same graph (counter -> tagger -> edge -> checker) with one
    # tag in total, so the figure isolates what tags cost, not the tagger's copy.
    tagged_path = os.path.join(ROOT, "bench", "net-tags.yaml")
    one_tag = variant(tagged_path, "period: 1024", "period: 1000000000")
    plain, base, tagged = [], [], []
    for _ in range(runs):
        plain.append(fm_dist(os.path.join(ROOT, "bench", "net-counter.yaml"), 1_000_000_000)[0])
        base.append(fm_dist(one_tag, 1_000_000_000)[0])
        r, err = fm_dist(tagged_path, 1_000_000_000)
        tagged.append(r)
    os.unlink(one_tag)
    line = [l for l in err.splitlines() if "stream_checker" in l]
    print(f"u64 counter across processes: counter -> checker {stats(plain)} Msps; with the tagger, one tag in all "
          f"{stats(base)} Msps; one tag per 1024 items {stats(tagged)} Msps "
          f"({statistics.median(tagged) / statistics.median(base) - 1:+.1%} vs one tag); receiver: {line[-1] if line else '?'}")


def latency(runs):
    for _ in range(runs):
        _, err = fm_dist(os.path.join(ROOT, "bench", "net-latency.yaml"), 50_000_000)
        print([l for l in err.splitlines() if "latency_probe" in l][-1])


def scale(runs):
    path = os.path.join(ROOT, "bench", "scale.yaml")
    text = open(path).read()

    def graph(n, work, replicas, single):
        t = text.replace("count: 5000", f"count: {n}").replace("work_us: 0", f"work_us: {work}")
        t = t.replace("min: 1,", f"min: {replicas},")
        if single:
            t = re.sub(r", segment: \w+", "", t)
            t = t[:t.index("  segments:")]
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        f.write(t)
        f.close()
        return f.name

    def wall(path, single):
        t0 = time.perf_counter()
        cmd = [FM, "run", "-q", path] if single else [FM, "run", "--distributed", "-q", path]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if p.returncode != 0:
            sys.exit(f"{path} failed:\n{p.stderr}")
        return time.perf_counter() - t0

    print("Message: a map {id, message, payload} with a 32768-byte payload (4096 cf32), CBOR-encoded "
          "32.8 KB on the wire; results: the same map without the payload.")
    print("Rate: N / (wall time of the run - wall time of the same run with N = 1), i.e. without "
          "process start-up and connection set-up.")
    print("| work per message | N | one process msg/s min/med/max | 1 replica msg/s | 2 replicas msg/s | 2 / 1 replicas |")
    print("|---|---|---|---|---|---|")
    for work, n in ((0, 20000), (1000, 4000)):
        cases = [("single", 1, True), ("r1", 1, False), ("r2", 2, False)]
        base = {c: statistics.median([wall(graph(1, work, r, s), s) for _ in range(3)]) for c, r, s in cases}
        rates = {c: [] for c, _, _ in cases}
        for _ in range(runs):
            for c, r, s in cases:
                rates[c].append(n / max(wall(graph(n, work, r, s), s) - base[c], 1e-3))
        med = {c: statistics.median(v) for c, v in rates.items()}
        print(f"| {work} us | {n} | {stats(rates['single'])} | {stats(rates['r1'])} | {stats(rates['r2'])} "
              f"| {med['r2'] / med['r1']:.2f} |")


def cpu_model():
    """The CPU's model name and the features the CRC kernels depend on."""
    info = open("/proc/cpuinfo").read()
    name = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
    vendor = re.search(r"vendor_id\s*:\s*(.*)", info).group(1).strip()
    feats = [f for f in ("avx512f", "vpclmulqdq", "sse4_2") if f in flags]
    return f"{vendor} {name} ({', '.join(feats)})"


def main():
    args = sys.argv[1:]
    runs = 5
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i:i + 2]
    what = args or ["chain", "memory", "cpu"]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "flowmesh"], cwd=ROOT, check=True)
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.uname().sysname} {os.uname().release} "
          f"nproc={os.cpu_count()} cpu={cpu_model()}")
    for w in what:
        {"chain": lambda: chain(runs), "memory": memory, "cpu": lambda: cpu(runs), "net": lambda: net(runs), "net-crc": lambda: net_crc(runs),
         "tags": lambda: tags(runs), "latency": lambda: latency(3), "scale": lambda: scale(runs)}[w]()


if __name__ == "__main__":
    main()
