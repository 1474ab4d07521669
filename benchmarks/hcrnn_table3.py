"""HCRNN rows of Table 3 (CiteULike, hcrnn protocol): paper form and causal form.

Each run trains one HCRNN configuration with the paper's settings (embedding and
hidden 100, K = 50, Adam lr 1e-3 eps 1e-8, dropout 0.25/0.5, batch 512 prefixes,
lambda = 0.001), validates with full ranking after every epoch (valid R@20,
a later epoch wins a tie, patience 10, at most ``--max-epochs``), restores the best
epoch and evaluates the test split at it. A wall-clock budget per run caps the
number of epochs (the shared 2-core machine does not allow 200-epoch runs here);
capped runs are marked ``capped`` in the JSON and the markdown.

Usage (one process per list of runs; results are merged into the JSON by run key)::

    python benchmarks/hcrnn_table3.py --runs hcrnn-3+bi:paper:10 hcrnn-3+bi:causal:10 \
        --budget-minutes 60 --max-epochs 200

Run spec: ``NAME:FORM:SEED`` where NAME is ``hcrnn-{1,2,3}`` or ``hcrnn-{1,2,3}+bi``
(no ``+bi``: NARM attention readout, as "HCRNN-v" in the paper's table) and FORM is
``paper`` (prefix-augmented, one θ per prefix) or ``causal`` (θ_t from the prefix up to
t, whole sequences in one pass).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import sys
import time

import numpy as np

from tfrec.training.benchmark import format_mean_std

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
OUT_JSON = os.path.join(RESULTS, "hcrnn_table3.json")
TABLE_JSON = os.path.join(RESULTS, "citeulike_table3.json")

PAPER = {  # R@3 / R@20 / M@3 / M@20, Table 3, CiteULike
    "hcrnn-1": {"recall@3": 8.60, "recall@20": 25.36, "mrr@3": 6.18, "mrr@20": 8.16},
    "hcrnn-2": {"recall@3": 8.83, "recall@20": 25.10, "mrr@3": 6.41, "mrr@20": 8.38},
    "hcrnn-3": {"recall@3": 9.21, "recall@20": 25.42, "mrr@3": 6.65, "mrr@20": 8.61},
    "hcrnn-3+bi": {"recall@3": 9.33, "recall@20": 25.81, "mrr@3": 6.74, "mrr@20": 8.70},
}
METRICS = ("recall@3", "recall@20", "mrr@3", "mrr@20")


def parse_run(spec: str) -> dict:
    name, form, seed = spec.split(":")
    variant = int(name.split("-")[1][0])
    attention = "bi" if name.endswith("+bi") else "narm"
    if form not in ("paper", "causal"):
        raise ValueError(f"form must be paper or causal: {spec}")
    return {"name": name, "form": form, "seed": int(seed), "variant": variant, "attention": attention}


class TimeBudget:
    """Keras callback factory: stop after the epoch in which the budget ran out."""

    def __new__(cls, seconds: float):
        import keras

        class _Budget(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.t0 = time.time()
                self.hit = False

            def on_epoch_end(self, epoch, logs=None):
                if time.time() - self.t0 > seconds:
                    self.hit = True
                    self.model.stop_training = True

        return _Budget()


def fit_resumable(model, data, *, budget_s: float, max_epochs: int, patience, run_dir=None) -> dict:
    """``model.fit`` with full-ranking validation (hcrnn protocol, valid R@20) under a
    wall-clock budget, keeping each epoch's logs and training seconds.

    With ``run_dir``, the run keeps a backup of the model and optimizer after every
    epoch (Keras ``BackupAndRestore``), its validation state (best epoch, best weights,
    patience counter) and its progress (``progress.json``, written after every epoch),
    so a run stopped by the budget, or killed, continues where it stopped when it is
    started again with the same ``run_dir``: epochs, selection and timings accumulate
    over the invocations.

    Returns:
        dict with ``history`` (per epoch: training logs, ``train_seconds`` and the
        ``val_*`` metrics), ``epochs_run``, ``capped`` (the budget stopped it before
        patience or ``max_epochs`` would have), ``early_stopped`` (patience ended it),
        ``validated`` (validation ran), ``epoch_seconds``, ``train_wall_seconds`` and
        ``invocations``.
    """
    import keras

    from tfrec.training.runs import EpochTimer

    timer, budget = EpochTimer(), TimeBudget(budget_s)
    callbacks, fit_kw, progress_path = [timer, budget], {}, None
    progress = {"epochs": [], "train_wall_seconds": 0.0, "invocations": 0}
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), delete_checkpoint=False))
        fit_kw["validation_state"] = os.path.join(run_dir, "validation")
        progress_path = os.path.join(run_dir, "progress.json")
        if os.path.isfile(progress_path):
            with open(progress_path) as f:
                progress = json.load(f)
            print(f"resuming after epoch {len(progress['epochs'])} from {run_dir}", flush=True)
    progress["invocations"] = progress.get("invocations", 0) + 1
    t0 = [time.time()]

    class Progress(keras.callbacks.Callback):
        """Appends each finished epoch (training logs, training seconds) to ``progress``
        and, with a run directory, writes it at once, so a killed run keeps its timings."""

        def on_epoch_end(self, epoch, logs=None):
            progress["epochs"].append({**{k: float(v) for k, v in (logs or {}).items() if not k.startswith("val_")},
                                       "train_seconds": float(timer.seconds[-1])})
            now = time.time()
            progress["train_wall_seconds"] += now - t0[0]
            t0[0] = now
            if progress_path:
                with open(progress_path + ".tmp", "w") as f:
                    json.dump(progress, f)
                os.replace(progress_path + ".tmp", progress_path)

    callbacks.append(Progress())  # after the timer, which records the epoch's seconds first
    model.fit(data, epochs=max_epochs, validation_protocol="hcrnn", monitor="recall@20",
              patience=patience, callbacks=callbacks, verbose=2, **fit_kw)
    vhist = list(getattr(model, "validation_history", []))
    epochs = progress["epochs"]
    epochs_run = max(len(vhist), len(epochs))
    history = [{"epoch": i + 1, **(epochs[i] if i < len(epochs) else {}),
                **{f"val_{k}": v for k, v in (vhist[i] if i < len(vhist) else {}).items() if k != "epoch"}}
               for i in range(epochs_run)]
    # the budget ran out, but only "capped" when neither patience nor max_epochs would
    # have ended the run at that same epoch
    best = getattr(model, "best_epoch", None)
    patience_stop = bool(vhist) and patience is not None and best is not None and epochs_run - best >= patience
    capped = bool(budget.hit) and epochs_run < max_epochs and not patience_stop
    early = bool(vhist) and patience is not None and not capped and epochs_run < max_epochs
    return {"history": history, "epochs_run": epochs_run, "capped": capped, "early_stopped": early,
            "validated": bool(vhist),
            "epoch_seconds": [e["train_seconds"] for e in epochs],
            "train_wall_seconds": progress["train_wall_seconds"], "invocations": progress["invocations"]}


def finished_earlier(path: str, key: str) -> bool:
    """True when the results JSON ``path`` holds run ``key`` and it was not capped
    (a resumed command skips it)."""
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        runs = {r["key"]: r for r in json.load(f).get("runs", [])}
    return key in runs and not runs[key].get("capped")


def locked_update(path: str, fn) -> None:
    """Read-modify-write of a JSON file under an exclusive lock."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {}
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
        data = fn(data)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=float)
        os.replace(tmp, path)


def run_one(run: dict, data, budget_s: float, max_epochs: int, patience: int, causal_batch: int,
            two_phase: bool, causal_normalizer=None, state_dir=None, random_batches: int = 0) -> dict:
    """Trains and tests one run. ``random_batches`` (paper form): train on the
    authors' random batches of 512 prefixes instead of length-bucketed ones, the
    recurrence run in that many length groups per batch. With ``state_dir``, the run keeps a backup of the
    model and optimizer after every epoch (Keras ``BackupAndRestore``) and its
    validation state (best epoch, best weights, patience counter), so a run stopped
    by the wall-clock budget continues where it stopped when the same command runs
    again (epochs, selection and timings accumulate over the invocations)."""
    import keras

    from tfrec.evaluation import evaluate
    from tfrec.models.hcrnn import HCRNN
    from tfrec.training.runs import seconds_per_epoch

    keras.utils.set_random_seed(run["seed"])
    kw = dict(variant=run["variant"], attention=run["attention"], seed=run["seed"], two_phase=two_phase)
    if run["form"] == "causal":
        kw.update(layout="sequence", batch_size=causal_batch, target_normalizer=causal_normalizer)
    elif random_batches:
        kw.update(bucket=False, length_groups=random_batches)
    model = HCRNN(num_items=data.num_items, **kw)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
    run_dir = (os.path.join(state_dir, f"{run['name']}_{run['form']}_{run['seed']}" + ("_two_phase" if two_phase else "")
                            + ("_random_batches" if random_batches else ""))
               if state_dir else None)
    fitted = fit_resumable(model, data, budget_s=budget_s, max_epochs=max_epochs, patience=patience, run_dir=run_dir)
    test = evaluate(model, data.test, protocol="hcrnn")
    test_conservative = evaluate(model, data.test, protocol="hcrnn_conservative")
    epochs_run = fitted["epochs_run"]
    return {
        **run, "model_config": model.get_config(), "best_epoch": model.best_epoch,
        "epochs_run": epochs_run, "capped": fitted["capped"], "early_stopped": fitted["early_stopped"],
        "invocations_state_dir": state_dir,
        "valid": model.best_metrics, "test": test, "test_conservative": test_conservative,
        "seconds_per_epoch": seconds_per_epoch(fitted["epoch_seconds"]), "epoch_seconds": fitted["epoch_seconds"],
        "train_wall_seconds": fitted["train_wall_seconds"], "history": fitted["history"],
        "finished_utc": datetime.datetime.utcnow().isoformat(timespec="seconds"),
    }


def is_two_phase(run: dict) -> bool:
    return ":two_phase" in run["key"]


def is_random_batches(run: dict) -> bool:
    return ":random_batches" in run["key"]


def run_key(run: dict, two_phase: bool, random_batches: int) -> str:
    return (f"{run['name']}:{run['form']}:{run['seed']}" + (":two_phase" if two_phase else "")
            + (":random_batches" if random_batches else ""))


def row_key(run: dict) -> str:
    """``name`` (paper form), ``name (causal)``, and with the authors' two-phase update
    ``name (two-phase)`` / ``name (causal, two-phase)``; paper-form runs on the
    authors' random batches (not length-bucketed) add ``random batches``."""
    tags = (([] if run["form"] == "paper" else ["causal"]) + (["two-phase"] if is_two_phase(run) else [])
            + (["random batches"] if is_random_batches(run) else []))
    return run["name"] + (f" ({', '.join(tags)})" if tags else "")


def summarize(runs: list) -> dict:
    """Rows keyed by :func:`row_key`: mean ± std (ddof 1) over the seeds of a row.

    Runs capped by the wall-clock budget are not averaged in while the row has a
    converged run; they are listed as ``partial`` (seed, epochs run, test R@20).
    """
    from citeulike_table3 import summarize as table_summary

    groups = {}
    for r in runs:
        groups.setdefault(row_key(r), []).append(r)
    rows = {}
    for key, rs in sorted(groups.items()):
        # one rule for capped runs, the table's (citeulike_table3.summarize)
        by_seed = {str(r["seed"]): {**r, "stopped_at_deadline": bool(r["capped"])} for r in rs}
        s = table_summary(by_seed)
        avg = [by_seed[k] for k in s["seeds"]]
        rows[key] = {
            "model": rs[0]["name"], "form": rs[0]["form"], "two_phase": is_two_phase(rs[0]),
            "random_batches": is_random_batches(rs[0]),
            "seeds": [r["seed"] for r in avg],
            "test": s["test"],
            "valid_recall@20": s["valid"]["recall@20"]["mean"],
            "best_epochs": [r["best_epoch"] for r in avg], "epochs_run": [r["epochs_run"] for r in avg],
            "capped": all(r["capped"] for r in rs),
            "partial": [{"seed": r["seed"], "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"],
                         "test_recall@20": r["test"]["recall@20"]} for r in map(by_seed.get, s["partial_seeds"])],
            "seconds_per_epoch": float(np.median([r["seconds_per_epoch"] for r in rs])),
            "paper": PAPER.get(rs[0]["name"]),
            "test_conservative": ({m: s["test_conservative"][m]["mean"] for m in METRICS}
                                  if all("test_conservative" in r for r in avg) else None),
        }
    return rows


def write_markdown(data: dict) -> None:
    lines = ["# HCRNN on CiteULike (Table 3), hcrnn protocol", "",
             "Optimistic ties, all 1,981 classes ranked (index 0 included), every test prefix once, x100.",
             "Test metrics at the epoch with the best valid R@20 (later epoch wins ties).", "",
             "Command(s):", ""]
    lines += [f"    {c}" for c in data.get("commands", [])]
    lines += ["", "Machine: " + data.get("machine", ""), "",
              "Mean ± std (sample std, ddof 1) over the seeds listed; a run capped by the wall-clock "
              "budget is not averaged in while its row has a converged run (column 'capped, not averaged': "
              "seed, epochs run, best epoch, test R@20).", "",
              "| row | form | seeds | R@3 | R@20 | M@3 | M@20 | paper R@3/R@20/M@3/M@20 | cons. R@3/R@20/M@3/M@20 "
              "| best ep / ep run | s/epoch | capped, not averaged |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in data.get("rows", {}).items():
        def cell(m):
            return format_mean_std(r["test"][m])

        partial = ", ".join(f"{p['seed']} ({p['epochs_run']} ep, best {p['best_epoch']}, "
                            f"R@20 {p['test_recall@20']:.2f})" for p in r["partial"])
        p = r["paper"]
        ptxt = "/".join(f"{p[m]:.2f}" for m in METRICS) if p else "-"
        c = r.get("test_conservative")
        ctxt = "/".join(f"{c[m]:.2f}" for m in METRICS) if c else "not computed"
        lines.append(f"| {key} | {r['form']} | {','.join(map(str, r['seeds']))} | "
                     + " | ".join(cell(m) for m in METRICS)
                     + f" | {ptxt} | {ctxt} | {r['best_epochs']} / {r['epochs_run']} | {r['seconds_per_epoch']:.1f} | "
                     + ("all runs capped" if r["capped"] else partial or "no") + " |")
    for t in (data.get("timing"), data.get("timing_two_phase")):
        if not t:
            continue
        both = " (one-phase and two-phase update)" if t.get("two_phase") else ""
        lines += ["", f"## Seconds per epoch, paper form vs causal form{both}, measured in one process", "",
                  f"    {t.get('command', '')}", ""]
        for suffix in ("", "_two_phase") if t.get("two_phase") else ("",):
            if f"paper{suffix}" not in t:
                continue
            lines += [f"HCRNN-3+Bi{' with the two-phase update' if suffix else ''}, one training epoch (all 34,810 "
                      f"training targets, no validation), interleaved causal/paper/causal: paper form "
                      f"{t[f'paper{suffix}_seconds_per_epoch']:.1f} s "
                      f"(runs {', '.join(f'{v:.1f}' for v in t[f'paper{suffix}'])}), causal form "
                      f"{t[f'causal{suffix}_seconds_per_epoch']:.1f} s "
                      f"(runs {', '.join(f'{v:.1f}' for v in t[f'causal{suffix}'])}; "
                      f"{t['causal_batch_sequences']} sequences per batch).", ""]
        lines += [f"1-minute load average during the epochs: {', '.join(f'{v:.1f}' for v in t['loadavg'])} "
                  "on 2 cores."]
    notes = data.get("notes", "")
    if isinstance(notes, list):
        notes = "\n".join(notes)
    lines += ["", notes]
    with open(os.path.join(RESULTS, "hcrnn_table3.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def timing(data, causal_batch: int, rounds: int = 1, two_phase: bool = False) -> dict:
    """Seconds per training epoch (all training targets once, no validation) of the
    paper form and the causal form of HCRNN-3+Bi, measured in one process,
    interleaved (causal, paper, causal, ...) so both see the same machine load.
    With ``two_phase`` the same is then measured with the authors' two-phase update
    (keys ``paper_two_phase``, ``causal_two_phase``), still in the same process."""
    import keras

    from tfrec.models.hcrnn import HCRNN

    configs = [("paper", False), ("causal", False)] + ([("paper", True), ("causal", True)] if two_phase else [])
    models = {}
    for form, tp in configs:
        keras.utils.set_random_seed(10)
        kw = dict(layout="sequence", batch_size=causal_batch) if form == "causal" else {}
        m = HCRNN(num_items=data.num_items, variant=3, attention="bi", seed=10, two_phase=tp, **kw)
        m.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
        m.fit(m.make_dataset(data.train).take(2), epochs=1, verbose=0)  # trace
        models[form + ("_two_phase" if tp else "")] = (m, m.make_dataset(data.train))
    out = {name: [] for name in models}
    out["loadavg"] = []
    order = []
    for suffix in ("", "_two_phase") if two_phase else ("",):
        order += ["causal" + suffix] + ["paper" + suffix, "causal" + suffix] * rounds
    for name in order:
        m, ds = models[name]
        t = time.perf_counter()
        m.fit(ds, epochs=1, verbose=0)
        out[name].append(time.perf_counter() - t)
        out["loadavg"].append(os.getloadavg()[0])
        print(f"timing {name}: {out[name][-1]:.1f}s (load {out['loadavg'][-1]:.1f})", flush=True)
    for name in models:
        out[f"{name}_seconds_per_epoch"] = float(np.median(out[name]))
    out["causal_batch_sequences"] = causal_batch
    out["two_phase"] = bool(two_phase)
    return out


LABELS = {"hcrnn-1": "HCRNN-1", "hcrnn-2": "HCRNN-2", "hcrnn-3": "HCRNN-3", "hcrnn-3+bi": "HCRNN-3+Bi"}


def row_commands(data: dict, key: str) -> list:
    """The recorded commands that trained runs of row ``key``: those naming one of its
    ``NAME:FORM:SEED`` specs, with ``--two-phase`` and ``--random-batches`` exactly
    when the row has them (the results keep one command list for all rows)."""
    runs = [r for r in data["runs"] if row_key(r) == key]
    specs = {f"{r['name']}:{r['form']}:{r['seed']}" for r in runs}
    two_phase = any(is_two_phase(r) for r in runs)
    random_batches = any(is_random_batches(r) for r in runs)
    return [c for c in data.get("commands", [])
            if specs & set(c.split()) and ("--two-phase" in c.split()) == two_phase
            and ("--random-batches" in c.split()) == random_batches]


def merge_into_table(data: dict) -> None:
    """Writes only the HCRNN rows into citeulike_table3.json, in the row format of
    benchmarks/citeulike_table3.py (``rows[name] = {label, summary, paper, runs, ...}``).
    Row names: :func:`row_key` (``hcrnn-3+bi`` is the paper form)."""
    from citeulike_table3 import summarize as table_summary

    def fn(payload):
        payload.setdefault("rows", {})
        for key, row in data["rows"].items():
            runs = {str(r["seed"]): {k: r.get(k) for k in ("best_epoch", "valid", "test", "test_conservative",
                                                          "seconds_per_epoch", "epoch_seconds", "epochs_run",
                                                          "capped")}
                    for r in data["runs"] if row_key(r) == key}
            # the table's own summary: capped runs are listed as partial, not averaged in
            for rr in runs.values():
                rr["stopped_at_deadline"] = bool(rr.get("capped"))
            summary = table_summary(runs)
            p = PAPER.get(row["model"])  # the paper's one number per variant, beside either form
            tags = (([] if row["form"] == "paper" else ["causal form"])
                    + (["two-phase update"] if row.get("two_phase") else [])
                    + (["random batches"] if row.get("random_batches") else []))
            label = LABELS[row["model"]] + (f" ({', '.join(tags)})" if tags else "")
            notes = (f"{'paper form: prefix-augmented, one theta per prefix' if row['form'] == 'paper' else 'causal form: theta_t from the prefix up to t, prefix-parallel'}; "
                     f"epochs run {row['epochs_run']}, best {row['best_epochs']}"
                     + (f"; CAPPED by the wall-clock budget (not converged), not averaged in: seed(s) "
                        f"{summary['partial_seeds']}" if summary["partial_seeds"] else "")
                     + ("; every run CAPPED by the wall-clock budget (not converged)"
                        if row["capped"] and not summary["partial_seeds"] else ""))
            payload["rows"][key] = {"label": label, "summary": summary,
                                    "paper": [p[m] for m in METRICS] if p else None, "runs": runs,
                                    "command": "; ".join(row_commands(data, key)),
                                    "source": "benchmarks/hcrnn_table3.py", "notes": notes}
        return payload

    locked_update(TABLE_JSON, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=[], help="NAME:FORM:SEED ...")
    ap.add_argument("--timing", action="store_true",
                    help="time one training epoch of the paper and the causal form in one process")
    ap.add_argument("--merge-only", action="store_true",
                    help="only merge the rows of the results JSON into citeulike_table3.json")
    ap.add_argument("--budget-minutes", type=float, default=60.0, help="wall budget per run")
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--causal-batch", type=int, default=64, help="sequences per batch (causal form)")
    ap.add_argument("--causal-normalizer", type=float, default=None,
                    help="causal form: divide the summed loss by this constant (target_normalizer)")
    ap.add_argument("--two-phase", action="store_true")
    ap.add_argument("--random-batches", type=int, default=0, metavar="GROUPS",
                    help="paper form: train on random batches of prefixes as the authors' code (reshuffled "
                         "every epoch, not length-bucketed), the recurrence of each batch run in GROUPS "
                         "length-sorted groups (same gradients, less padding work)")
    ap.add_argument("--data", default="hcrnn:hcrnn_citeulike")
    ap.add_argument("--merge-table", action="store_true", help="also merge rows into citeulike_table3.json")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/hcrnn_table3.json)")
    ap.add_argument("--state-dir", default=None,
                    help="keep per-run backups and validation state here; a capped run resumes when the "
                         "same command runs again (use a directory outside snapshots, e.g. /work/hcrnn_state)")
    args = ap.parse_args(argv)
    global OUT_JSON, RESULTS
    if args.out:
        OUT_JSON = args.out
        RESULTS = os.path.dirname(os.path.abspath(args.out))

    if args.timing:
        from tfrec.data.specs import load_spec

        res = timing(load_spec(args.data), args.causal_batch, two_phase=args.two_phase)
        res["command"] = "python benchmarks/hcrnn_table3.py " + " ".join(sys.argv[1:] if argv is None else argv)

        def fn(d):
            d["timing_two_phase" if args.two_phase else "timing"] = res
            return d

        locked_update(OUT_JSON, fn)
        return
    if args.merge_only:
        with open(OUT_JSON) as f:
            d = json.load(f)
        d["rows"] = summarize(d["runs"])
        with open(OUT_JSON, "w") as f:
            json.dump(d, f, indent=1)
        write_markdown(d)
        merge_into_table(d)
        return

    from tfrec.data.specs import load_spec

    data = load_spec(args.data)
    command = "python benchmarks/hcrnn_table3.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for spec in args.runs:
        run = parse_run(spec)
        random_batches = args.random_batches if run["form"] == "paper" else 0  # paper form only
        key = run_key(run, args.two_phase, random_batches)
        if args.state_dir and finished_earlier(OUT_JSON, key):
            print(f"=== {spec}: finished earlier (not capped), skipped ===", flush=True)
            continue
        print(f"=== {spec} ===", flush=True)
        res = run_one(run, data, args.budget_minutes * 60, args.max_epochs, args.patience,
                      args.causal_batch, args.two_phase, args.causal_normalizer, args.state_dir,
                      random_batches)
        res["key"] = key
        print(json.dumps({k: res[k] for k in ("key", "best_epoch", "epochs_run", "capped", "test",
                                              "seconds_per_epoch")}, default=float), flush=True)

        def fn(d):
            runs = [r for r in d.get("runs", []) if r.get("key") != res["key"]] + [res]
            d["runs"] = runs
            d["rows"] = summarize(runs)
            cmds = d.get("commands", [])
            if command not in cmds:
                cmds.append(command)
            d["commands"] = cmds
            d["protocol"], d["data"] = "hcrnn", args.data
            d["machine"] = (f"{platform.node()} {os.cpu_count()} CPUs shared with other engineers' jobs "
                            "(1-minute load average 15-35 during the runs); s/epoch = median training seconds "
                            "per epoch after the first, validation excluded")
            return d

        locked_update(OUT_JSON, fn)
        with open(OUT_JSON) as f:
            d = json.load(f)
        write_markdown(d)
        if args.merge_table:
            merge_into_table(d)


if __name__ == "__main__":
    main()
