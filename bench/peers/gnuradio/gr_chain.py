#!/usr/bin/python3
"""GNU Radio 3.10 single-process baseline:
   source (null|sig) -> K x multiply_const -> head(N) -> null_sink ; reports samples/s.
Usage: gr_chain.py [--type f|c] [--source null|sig|const] [--stages 4] [--n 200e6] [--repeat 3]
Sources: null = blocks.null_source (zeroes its output on every call), sig = a 1 kHz cosine
(sig_source, a table lookup per item), const = sig_source with GR_CONST_WAVE (writes the
constant 1.0 into every item on every call: the "writing source" of docs/benchmarks.md).
Kept in the FlowMesh repository (bench/peers/) so that a clone reproduces every figure.
"""
import argparse, statistics, time
from gnuradio import gr, blocks, analog

def build(typ, source, stages, n):
    tb = gr.top_block()
    size = gr.sizeof_float if typ == "f" else gr.sizeof_gr_complex
    if source == "null":
        src = blocks.null_source(size)
    else:  # sig_source: a cosine per sample (table lookup), or a constant written into every item
        mk = analog.sig_source_f if typ == "f" else analog.sig_source_c
        wave = analog.GR_COS_WAVE if source == "sig" else analog.GR_CONST_WAVE
        src = mk(1e6, wave, 1e3, 1.0, 0)
    mult = [blocks.multiply_const_ff(1.0) if typ == "f" else blocks.multiply_const_cc(1.0 + 0j)
            for _ in range(stages)]
    head = blocks.head(size, int(n))
    sink = blocks.null_sink(size)
    tb.connect(src, *mult, head, sink)
    return tb, sink

def run_once(typ, source, stages, n):
    tb, sink = build(typ, source, stages, n)
    t0 = time.perf_counter()
    tb.run()                      # returns when head(N) has passed N items and the graph drained
    dt = time.perf_counter() - t0
    assert sink.nitems_read(0) == int(n)
    return int(n) / dt

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--type", choices=["f", "c"], default="f")
    ap.add_argument("--source", choices=["null", "sig", "const"], default="null")
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--n", type=float, default=200e6)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rates = [run_once(a.type, a.source, a.stages, a.n) for _ in range(a.repeat)]
    bps = 4 if a.type == "f" else 8
    print(f"gr_chain gr={gr.version()} type={a.type} source={a.source} stages={a.stages} N={int(a.n)} "
          f"Msps min/med/max = {min(rates)/1e6:.1f}/{statistics.median(rates)/1e6:.1f}/{max(rates)/1e6:.1f} "
          f"(median {statistics.median(rates)*bps/1e9:.2f} GB/s per edge)")

if __name__ == "__main__":
    main()
