"""HCRNN training speed: per-step loop inputs read from TensorArrays vs indexed.

``HCRNN._fast_loop`` reads each step's inputs (item embeddings, their projection,
and in the causal form the attention keys) from ``tf.TensorArray``s. Indexing the
captured time-major tensors instead (``x_tm[t]``, as tfrec did before 86fe2f2)
gives the same values, but the backward pass of ``tf.while_loop`` then adds a
gradient of the whole ``[T, B, ...]`` tensor at every step. This script times both
readers in one process, interleaved round by round, on the same CiteULike batches:
the paper form on length-bucketed batches (default), the paper form on the
authors' random batches (``bucket=False, length_groups=8``) and the causal form
(19 sequences per batch, summed loss / 512), all one-phase.

Usage::

    python benchmarks/hcrnn_loop_inputs.py --batches 20 --rounds 2

Writes ``benchmarks/results/hcrnn_loop_inputs.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import command, git_commit, machine, md_table, write_results  # noqa: E402

CONFIGS = {
    "paper form, bucketed batches": dict(bucket=True),
    "paper form, random batches (8 length groups)": dict(bucket=False, length_groups=8),
    "causal form (19 sequences per batch)": dict(layout="sequence", batch_size=19, target_normalizer=512),
}


class _Indexed:
    """Per-step reader that indexes the captured time-major tensor (the old loop)."""

    def __init__(self, seq_tm):
        self.seq_tm = seq_tm

    def read(self, t):
        return self.seq_tm[t]


@contextlib.contextmanager
def reader(kind: str):
    """Makes ``HCRNN._fast_loop`` read its step inputs with ``kind`` while tracing."""
    import tfrec.models.hcrnn as mod

    original = mod._steps
    if kind == "indexed":
        mod._steps = _Indexed
    try:
        yield
    finally:
        mod._steps = original


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="hcrnn:hcrnn_citeulike")
    ap.add_argument("--batches", type=int, default=20, help="training batches per timed fit")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    import keras

    from tfrec.data.specs import load_spec
    from tfrec.models.hcrnn import HCRNN

    data = load_spec(args.data)
    models = {}
    for name, kw in CONFIGS.items():
        for kind in ("indexed", "tensorarray"):
            keras.utils.set_random_seed(10)
            m = HCRNN(num_items=data.num_items, seed=10, **kw)
            m.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
            ds = m.make_dataset(data.train)
            with reader(kind):
                m.fit(ds.take(3), epochs=1, verbose=0)  # traces the train step with this reader
            models[(name, kind)] = (m, ds)
            print(f"traced: {name}, {kind}", flush=True)
    seconds = {k: [] for k in models}
    loadavg = []
    for _ in range(args.rounds):
        for key, (m, ds) in models.items():
            with reader(key[1]):  # a retrace, if any, keeps the reader
                t = time.perf_counter()
                m.fit(ds.take(args.batches), epochs=1, verbose=0)
                seconds[key].append(time.perf_counter() - t)
            loadavg.append(os.getloadavg()[0])
            print(f"{key[0]}, {key[1]}: {seconds[key][-1]:.1f} s", flush=True)
    rows = []
    for name in CONFIGS:
        old = float(np.median(seconds[(name, "indexed")]))
        new = float(np.median(seconds[(name, "tensorarray")]))
        rows.append({"configuration": name, "indexed s": old, "TensorArray s": new, "speed-up": old / new,
                     "runs indexed": ", ".join(f"{v:.1f}" for v in seconds[(name, "indexed")]),
                     "runs TensorArray": ", ".join(f"{v:.1f}" for v in seconds[(name, "tensorarray")])})
    payload = {"command": command(), "git_commit": git_commit(), "machine": machine(), "data": args.data,
               "batches_per_fit": args.batches, "rounds": args.rounds, "rows": rows, "loadavg": loadavg}
    md = ["# HCRNN training: loop inputs from TensorArrays vs indexed captured tensors", "",
          f"    {payload['command']}", "",
          f"Commit {payload['git_commit'] or '(snapshot)'}; {payload['machine']['date']}; "
          f"{payload['machine']['cpus']} CPUs. Seconds for {args.batches} training batches (one-phase, "
          f"HCRNN-3+Bi, `{args.data}`), median of {args.rounds} interleaved rounds, both readers in one process "
          "on the same batches. 1-minute load average: " + ", ".join(f"{v:.1f}" for v in loadavg), "",
          md_table(rows, ["configuration", "indexed s", "TensorArray s", "speed-up", "runs indexed",
                          "runs TensorArray"])]
    write_results("hcrnn_loop_inputs", payload, "\n".join(md))


if __name__ == "__main__":
    main()
