"""HCRNN Table 3, CiteULike column: neural rows reproduced with tfrec.

Trains each model under the HCRNN protocol (data ``hcrnn:hcrnn_citeulike``,
optimistic ties with index 0 ranked, x100) with the table settings from the
registry (embedding 100, hidden 100, batch 512, Adam lr 1e-3 eps 1e-8, dropout
0.25 input / 0.5 decoder input, early stopping on valid R@20 with patience 10,
test at the best-valid epoch), for each seed, and records paper-protocol and
conservative-tie test numbers plus seconds per epoch.

Results are keyed by model name: ``results/citeulike_table3.json`` holds
``rows[<model>]["runs"][<seed>]`` and a per-model ``summary`` (mean +- std over the
runs present). A run of some models (``--models gru4rec_ce,narm``) merges into
the existing file and rewrites only those models' rows (under a file lock), so
other scripts (e.g. HCRNN's) can add their own rows to the same JSON; the
markdown is regenerated from the whole JSON.

Usage::

    python benchmarks/citeulike_table3.py --models gru4rec_ce,lstm4rec,narm,stamp \
        --seeds 10,20,30 [--max-epochs 200] [--patience 10]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, command, machine, md_table  # noqa: E402

from tfrec.training.benchmark import format_mean_std, mean_std  # noqa: E402

NAME = "citeulike_table3"
JSON_PATH = os.path.join(RESULTS, f"{NAME}.json")
MD_PATH = os.path.join(RESULTS, f"{NAME}.md")
METRICS = ("recall@3", "recall@20", "mrr@3", "mrr@20")

#: HCRNN paper, Table 3, CiteULike (R@3, R@20, M@3, M@20).
PAPER = {
    "gru4rec_ce": (8.37, 24.19, 5.98, 7.86),
    "lstm4rec": (7.07, 23.33, 4.93, 6.82),
    "narm": (7.81, 24.82, 5.40, 7.41),
    "stamp": (5.09, 21.93, 3.25, 5.22),
}
LABELS = {"gru4rec_ce": "GRU4REC", "lstm4rec": "LSTM4REC", "narm": "NARM", "stamp": "STAMP"}


@contextlib.contextmanager
def locked_results():
    """Read-modify-write of the results JSON under an exclusive file lock."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(JSON_PATH + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        payload = {"rows": {}}
        if os.path.isfile(JSON_PATH):
            with open(JSON_PATH) as f:
                payload = json.load(f)
        payload.setdefault("rows", {})
        yield payload
        tmp = JSON_PATH + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, default=float)
        os.replace(tmp, JSON_PATH)
        with open(MD_PATH, "w") as f:
            f.write(render_markdown(payload))
        fcntl.flock(lock, fcntl.LOCK_UN)


def summarize(runs: dict) -> dict:
    """Mean and std (sample, ddof 1; :func:`tfrec.training.benchmark.mean_std`) over
    seeds of each metric block.

    Runs stopped at the session deadline (``stopped_at_deadline``) are left out of
    the mean when at least one complete run exists, and listed as ``partial_seeds``.
    """
    order = lambda s: int(s) if str(s).isdigit() else str(s)  # noqa: E731
    complete = {k: r for k, r in runs.items() if not r.get("stopped_at_deadline")}
    partial = sorted((k for k in runs if k not in complete), key=order)
    if complete:
        runs = complete
        partial_list = partial
    else:
        partial_list = []
    out = {"seeds": sorted(runs, key=order), "partial_seeds": partial_list}
    for block in ("test", "test_conservative", "valid"):
        vals = {m: [r[block][m] for r in runs.values() if block in r and m in r[block]] for m in METRICS}
        out[block] = {m: mean_std(v) for m, v in vals.items() if v}
    for key in ("seconds_per_epoch", "best_epoch", "epochs_run"):
        v = [r[key] for r in runs.values() if r.get(key) is not None]
        if v:
            out[key] = {**mean_std(v), "median": float(np.median(v))}
    return out


def _pm(block: dict, m: str) -> str:
    if m not in block:
        return ""
    return format_mean_std(block[m])


def render_markdown(payload: dict) -> str:
    rows = payload["rows"]
    lines = ["# HCRNN Table 3, CiteULike column, reproduced with tfrec", ""]
    lines.append("Protocol `hcrnn` (optimistic ties, index 0 ranked, x100); test at the epoch with the "
                 "best valid R@20. Mean ± std (sample std, ddof 1; none for one seed) over the seeds listed (runs cut by the session "
                 "deadline are not averaged in; they are listed under partial runs). "
                 "'best epoch' and 'epochs run' list every run, in seed order. Conservative-tie test "
                 "numbers (rank = 1 + number of scores >= the target's, other than itself) beside.")
    lines.append("")
    table = []
    for name, row in rows.items():
        s = row.get("summary", {})
        t, c = s.get("test", {}), s.get("test_conservative", {})
        paper = row.get("paper")
        r = {"model": row.get("label", name), "seeds": ",".join(map(str, s.get("seeds", []))),
             "R@3": _pm(t, "recall@3"), "R@20": _pm(t, "recall@20"), "M@3": _pm(t, "mrr@3"),
             "M@20": _pm(t, "mrr@20"),
             "paper R@3/R@20/M@3/M@20": "/".join(f"{v:.2f}" for v in paper) if paper else "",
             "ΔR@20 vs paper": (f"{t['recall@20']['mean'] - paper[1]:+.2f}" if paper and "recall@20" in t else ""),
             "cons. R@3/R@20/M@3/M@20": "/".join(f"{c[m]['mean']:.2f}" for m in METRICS if m in c),
             "s/epoch": (f"{s['seconds_per_epoch']['median']:.1f}" if "seconds_per_epoch" in s else ""),
             "partial runs (seed: epochs, test R@20)": ", ".join(
                 f"{k}: {row['runs'][k].get('epochs_run')}*, {row['runs'][k]['test']['recall@20']:.2f}"
                 for k in s.get("partial_seeds", [])),
             "best epoch": (" ".join(str(rr.get("best_epoch")) for rr in row.get("runs", {}).values())),
             "epochs run": (" ".join(str(rr.get("epochs_run")) + ("*" if rr.get("stopped_at_deadline") else "")
                                     for rr in row.get("runs", {}).values()))}
        table.append(r)
    cols = ["model", "seeds", "R@3", "R@20", "M@3", "M@20", "paper R@3/R@20/M@3/M@20", "ΔR@20 vs paper",
            "cons. R@3/R@20/M@3/M@20", "s/epoch", "best epoch", "epochs run",
            "partial runs (seed: epochs, test R@20)"]
    lines.append(md_table(table, cols))
    lines.append("")
    lines.append("`*` = training stopped at the session deadline before early stopping (patience 10) "
                 "or the epoch cap triggered: the best-valid epoch so far is tested, the model was "
                 "still improving or had not been confirmed converged.")
    lines.append("")
    lines.append("## Settings and commands per model")
    for name, row in rows.items():
        lines.append(f"- **{row.get('label', name)}** (`{name}`): command `{row.get('command', '')}`; "
                     f"model config `{json.dumps(row.get('model_config', {}))}`; fit config "
                     f"`{json.dumps(row.get('fit_config', {}))}`.")
        if row.get("notes"):
            lines.append(f"  Notes: {row['notes']}")
    timing = payload.get("layout_timing")
    if timing:
        lines.append("")
        lines.append("## Prefix-augmented vs prefix-parallel training (same objective), seconds per epoch")
        trows = []
        for name, t in timing.items():
            for layout in ("prefix", "sequence"):
                if layout in t:
                    trows.append({"model": name, "layout": layout, "batch": t[layout]["batch_size"],
                                  "wall s/epoch": t[layout]["seconds_per_epoch"],
                                  "CPU s/epoch": t[layout]["cpu_seconds_per_epoch"],
                                  "load avg": f"{t[layout]['load_average'][0]:.1f}"})
        lines.append(md_table(trows, ["model", "layout", "batch", "wall s/epoch", "CPU s/epoch", "load avg"]))
        cmds = sorted({t.get("command", "") for t in timing.values()})
        lines.append("")
        lines.append("Command: " + "; ".join(f"`{c}`" for c in cmds))
    meta = payload.get("machine")
    if meta:
        lines.append("")
        lines.append(f"Machine: {meta}. Seconds per epoch = median over epochs after the first, "
                     "training only (validation excluded), measured while other engineers shared "
                     "the same 2 CPU cores, so they are upper bounds of an idle machine.")
    if payload.get("notes"):
        lines.append("")
        lines.extend(payload["notes"])
    return "\n".join(lines) + "\n"


class EpochLog:
    """Prints one line per epoch (the benchmark runs with Keras verbose=0)."""

    def __new__(cls, tag):
        import keras

        class _CB(keras.callbacks.Callback):
            # tfrec's validation callback runs after user callbacks and adds val_* to
            # the same logs dict, so the line is printed when the next epoch begins.
            _pending = None

            def _flush(self):
                if self._pending is not None:
                    e, logs, secs = self._pending
                    print(f"[{tag}] epoch {e} loss {logs.get('loss', float('nan')):.4f} "
                          f"val R@20 {logs.get('val_recall@20', float('nan')):.2f} "
                          f"M@20 {logs.get('val_mrr@20', float('nan')):.2f} ({secs:.1f}s train)",
                          flush=True)
                    self._pending = None

            def on_epoch_begin(self, epoch, logs=None):
                self._flush()
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self._pending = (epoch + 1, logs if logs is not None else {},
                                 time.perf_counter() - self._t)

            def on_train_end(self, logs=None):
                self._flush()

        return _CB()


def deadline_callback(deadline: float):
    """Stops training after the epoch that ends past ``deadline`` (a time.time() value)."""
    import keras

    class _CB(keras.callbacks.Callback):
        stopped = False

        def on_epoch_end(self, epoch, logs=None):
            if time.time() > deadline:
                self.model.stop_training = True
                _CB.stopped = True

    return _CB()


def run_one(name: str, data, seed: int, max_epochs: int, patience: int, model_opts: dict,
            fit_opts: dict, deadline: float = None) -> dict:
    import keras

    from tfrec.evaluation import evaluate
    from tfrec.training.runs import train

    mcfg = {"seed": seed, **model_opts}
    fcfg = {"seed": seed, "epochs": max_epochs, "patience": patience, **fit_opts}
    extra = [EpochLog(f"{name} seed {seed}")]
    stopper = deadline_callback(deadline) if deadline else None
    if stopper is not None:
        extra.append(stopper)
    model, res = train(name, data, model_config=mcfg, fit_config=fcfg, protocol="hcrnn",
                       data_spec="hcrnn:hcrnn_citeulike", verbose=0, callbacks=extra)
    res["test_conservative"] = evaluate(model, data.test, "hcrnn_conservative")
    out = {k: res.get(k) for k in ("best_epoch", "valid", "test", "test_conservative",
                                   "seconds_per_epoch", "epoch_seconds", "train_seconds")}
    out["epochs_run"] = len(res.get("history", []))
    out["stopped_at_deadline"] = bool(stopper is not None and type(stopper).stopped)
    out["valid_recall@20_curve"] = [round(h.get("val_recall@20", float("nan")), 3)
                                    for h in res.get("history", [])]
    out["model_config"], out["fit_config"] = res["model_config"], res["fit_config"]
    keras.backend.clear_session()
    return out


def time_layouts(name: str, data, epochs: int = 2, sequence_batch: int = 19) -> dict:
    """Seconds per epoch (wall and CPU of this process) of the two training forms of a
    causal model: prefix-augmented batches of 512 samples vs prefix-parallel batches
    of ``sequence_batch`` whole sequences (~512 targets). Median over epochs after the first."""
    import keras

    from tfrec.models import registry
    from tfrec.training.runs import make_optimizer, seconds_per_epoch

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.wall, self.cpu = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._w, self._c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.wall.append(time.perf_counter() - self._w)
            self.cpu.append(time.process_time() - self._c)

    out = {}
    spec = registry.get(name)
    for layout, bs in (("prefix", spec.model_config.get("batch_size", 512)), ("sequence", sequence_batch)):
        keras.utils.set_random_seed(0)
        model = registry.build(name, data, layout=layout, batch_size=bs)
        model.compile(optimizer=make_optimizer(spec.fit_config))
        t = Timer()
        model.fit(model.make_dataset(data.train), epochs=epochs, callbacks=[t], verbose=0)
        out[layout] = {"batch_size": bs, "seconds_per_epoch": seconds_per_epoch(t.wall),
                       "cpu_seconds_per_epoch": seconds_per_epoch(t.cpu), "epoch_seconds": t.wall,
                       "load_average": os.getloadavg()}
        print(f"[timing] {name} {layout}: {out[layout]}", flush=True)
        keras.backend.clear_session()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gru4rec_ce,lstm4rec,narm,stamp")
    p.add_argument("--seeds", default="10,20,30")
    p.add_argument("--data", default="hcrnn:hcrnn_citeulike")
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--model-opt", action="append", default=[], metavar="MODEL:KEY=VALUE",
                   help="override a model config entry for one model, e.g. gru4rec_ce:layout=sequence")
    p.add_argument("--fit-opt", action="append", default=[], metavar="MODEL:KEY=VALUE")
    p.add_argument("--notes", action="append", default=[], metavar="MODEL:TEXT",
                   help="a note stored with a model's row (e.g. why epochs were capped)")
    p.add_argument("--row", action="append", default=[], metavar="MODEL:ROW_NAME",
                   help="store MODEL's runs under ROW_NAME (a diagnostic variant beside the table row)")
    p.add_argument("--deadline", help="UTC HH:MM: stop training (keeping the best-valid epoch so far) "
                   "after the epoch that ends past this time; such runs are marked stopped_at_deadline")
    p.add_argument("--time-layouts", action="store_true",
                   help="only time prefix vs prefix-parallel epochs of the (causal) --models")
    p.add_argument("--timing-epochs", type=int, default=3)
    args = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfrec.data.specs import load_spec
    from tfrec.models import registry

    def per_model(pairs):
        out = {}
        for item in pairs:
            model, kv = item.split(":", 1)
            k, v = kv.split("=", 1)
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
            out.setdefault(model, {})[k] = v
        return out

    mopts, fopts = per_model(args.model_opt), per_model(args.fit_opt)
    notes = {}
    for item in args.notes:
        model, text = item.split(":", 1)
        notes[model] = text
    row_names = dict(item.split(":", 1) for item in args.row)
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for m in models:
        registry.get(m)
    data = load_spec(args.data)
    cmd = command()
    if args.time_layouts:
        for name in models:
            timing = time_layouts(name, data, args.timing_epochs)
            with locked_results() as payload:
                payload.setdefault("layout_timing", {})[name] = {**timing, "command": cmd}
        return
    deadline = None
    if args.deadline:
        import datetime

        hh, mm = map(int, args.deadline.split(":"))
        now = datetime.datetime.now(datetime.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    for seed in seeds:  # seed-major: every model gets a first seed before any gets a second
        for name in models:
            t0 = time.time()
            print(f"=== {name} seed {seed} ===", flush=True)
            if deadline and time.time() > deadline:
                print(f"deadline passed; {name} seed {seed} not run", flush=True)
                continue
            run = run_one(name, data, seed, args.max_epochs, args.patience, mopts.get(name, {}),
                          fopts.get(name, {}), deadline)
            print(f"=== {name} seed {seed}: best epoch {run['best_epoch']} test {run['test']} "
                  f"conservative {run['test_conservative']} s/epoch {run['seconds_per_epoch']} "
                  f"({time.time() - t0:.0f}s)", flush=True)
            with locked_results() as payload:
                key = row_names.get(name, name)
                row = payload["rows"].setdefault(key, {})
                row["label"] = LABELS.get(key, key)
                if key in PAPER:
                    row["paper"] = list(PAPER[name])
                row.setdefault("runs", {})[str(seed)] = run
                row["command"] = cmd
                row["model_config"] = {k: v for k, v in run["model_config"].items() if k != "seed"}
                row["fit_config"] = {k: v for k, v in run["fit_config"].items() if k != "seed"}
                row["max_epochs"], row["patience"] = args.max_epochs, args.patience
                if name in notes:
                    row["notes"] = notes[name]
                row["summary"] = summarize(row["runs"])
                payload["machine"] = machine()


if __name__ == "__main__":
    main()
