#!/usr/bin/python3
"""GNU Radio 3.10 cross-process baseline over gr-zeromq (TCP loopback by default).
 Process A (tx): null_source -> zeromq.push_sink (binds)      [or pub_sink with --pattern pub]
 Process B (rx): zeromq.pull_source (connects) -> head(N) -> null_sink   [or sub_source]
 B measures samples/s from the first received item to the N-th (connection setup excluded).
Usage: gr_zmq.py run [--type f|c] [--source null|const] [--pattern push|pub] [--n 100e6] [--repeat 3] [--addr tcp://127.0.0.1:5555]
 --source const: the sender's source is sig_source with GR_CONST_WAVE, which writes every item
 (null_source zeroes its output on every call too; const is the FlowMesh benchmarks' "writing source").
 Kept in the FlowMesh repository (bench/peers/) so that a clone reproduces every figure.
       (the 'tx' / 'rx' roles are what 'run' spawns; each is a separate OS process)
"""
import argparse, statistics, subprocess, sys, threading, time
from gnuradio import gr, blocks, zeromq, analog

def size_of(typ):
    return gr.sizeof_float if typ == "f" else gr.sizeof_gr_complex

def tx(a):
    tb = gr.top_block()
    if a.source == "null":
        src = blocks.null_source(size_of(a.type))
    else:
        mk = analog.sig_source_f if a.type == "f" else analog.sig_source_c
        src = mk(1e6, analog.GR_CONST_WAVE, 0, 1.0, 0)
    if a.pattern == "push":
        snk = zeromq.push_sink(size_of(a.type), 1, a.addr, 100, False, -1)
    else:
        snk = zeromq.pub_sink(size_of(a.type), 1, a.addr, 100, False, -1, "")
    tb.connect(src, snk)
    tb.run()  # runs until the orchestrator terminates this process

def rx(a):
    n = int(a.n)
    tb = gr.top_block()
    if a.pattern == "push":
        src = zeromq.pull_source(size_of(a.type), 1, a.addr, 100, False, -1)
    else:
        src = zeromq.sub_source(size_of(a.type), 1, a.addr, 100, False, -1, "")
    head, sink = blocks.head(size_of(a.type), n), blocks.null_sink(size_of(a.type))
    tb.connect(src, head, sink)
    first = {}
    def poll():  # timestamp the first arriving items; 0.5 ms polling granularity
        while not first:
            k = sink.nitems_read(0)
            if k > 0:
                first["t"], first["k"] = time.perf_counter(), k
            time.sleep(0.0005)
    th = threading.Thread(target=poll, daemon=True)
    tb.start(); th.start()
    tb.wait()
    t_end = time.perf_counter()
    th.join(timeout=1)
    print(f"RATE {(n - first['k']) / (t_end - first['t']):.1f}", flush=True)

def run(a):
    rates = []
    for _ in range(a.repeat):
        common = ["--type", a.type, "--pattern", a.pattern, "--addr", a.addr, "--source", a.source]
        ptx = subprocess.Popen([sys.executable, __file__, "tx"] + common)
        try:
            time.sleep(1.0)  # let A bind
            out = subprocess.run([sys.executable, __file__, "rx", "--n", str(a.n)] + common,
                                 capture_output=True, text=True, timeout=600).stdout
            rates.append(float(out.split("RATE")[1]))
        finally:
            ptx.terminate(); ptx.wait()
            time.sleep(0.5)
    bps = size_of(a.type)
    med = statistics.median(rates)
    print(f"gr_zmq gr={gr.version()} pattern={a.pattern} source={a.source} type={a.type} N={int(a.n)} addr={a.addr} "
          f"Msps min/med/max = {min(rates)/1e6:.1f}/{med/1e6:.1f}/{max(rates)/1e6:.1f} "
          f"(median {med*bps/1e9:.2f} GB/s, {med*bps*8/1e9:.1f} Gbit/s)")

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["run", "tx", "rx"])
    ap.add_argument("--type", choices=["f", "c"], default="f")
    ap.add_argument("--pattern", choices=["push", "pub"], default="push")
    ap.add_argument("--source", choices=["null", "const"], default="null")
    ap.add_argument("--n", type=float, default=100e6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--addr", default="tcp://127.0.0.1:5555")
    a = ap.parse_args()
    {"run": run, "tx": tx, "rx": rx}[a.role](a)
