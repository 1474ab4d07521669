"""Moonshot of issue #4: HCRNN-3+Bi (causal form) trained with the official GRU4Rec
recipe -- a ranking loss (BPR-max) or sampled softmax over the batch's targets plus
popularity-sampled negatives -- on CiteULike (hcrnn split).

Target: Hidasi's official GRU4Rec on this split, R@20 25.38 / M@20 9.57 under
conservative ties (our faithful GRU4Rec with that recipe: 25.70 / 10.16, 3 seeds,
``benchmarks/results/gru4rec_official_recipe.md``). For reference, the paper's
HCRNN-3+Bi: 25.81 / 8.70 (optimistic ties, the authors' evaluation).

Every run trains HCRNN-3+Bi in the causal form as ``benchmarks/hcrnn_table3.py``
does (19 whole sequences per length-bucketed batch, summed loss / 512, embedding and
hidden 100, K = 50, dropout 0.25/0.5, lambda 0.001 KL), only the training loss, its
negatives and the optimizer differ (``VARIANTS``). After every epoch the VALIDATION
split is ranked in full (hcrnn protocol) and the run early-stops on valid R@20
(``--patience``; a later epoch wins a tie); the best epoch's weights are restored and
the TEST split is evaluated once, under the hcrnn protocol (optimistic ties, padding
ranked), its conservative-ties variant, and conservative ties without padding (what
the official GRU4Rec evaluation computes). Variants are compared on valid R@20 only.

Usage::

    python benchmarks/hcrnn_moonshot.py --variants bpr-max sampled-softmax --seeds 10 \\
        --budget-minutes 30 --max-epochs 80 --patience 8
    python benchmarks/hcrnn_moonshot.py --report-only      # rewrite the .md from the JSON

Runs are merged into the JSON by key ``VARIANT:SEED`` (a repeated key is replaced).
``--no-launch-after HH:MM`` (UTC) skips runs that would start later than that.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import git_commit, md_table  # noqa: E402
from hcrnn_table3 import finished_earlier, fit_resumable, locked_update  # noqa: E402

from tfrec.training.benchmark import format_mean_std, mean_std  # noqa: E402

NAME = "hcrnn_moonshot"
METRICS = ("recall@3", "recall@20", "mrr@3", "mrr@20")
#: the causal-form training of benchmarks/hcrnn_table3.py (its Table 3 rows)
BASE = {"variant": 3, "attention": "bi", "layout": "sequence", "batch_size": 19, "target_normalizer": 512.0}
RECIPE = {"num_negatives": 2048, "sample_alpha": 0.4}  # GRU4Rec's official bpr-max recipe
VARIANTS = {
    # BPR-max as in the official recipe (bpreg 1.95, final ELU 0.5), HCRNN's Adam
    "bpr-max": {"model": {"loss": "bpr-max", "bpreg": 1.95, "elu_param": 0.5, **RECIPE},
                "fit": {"optimizer": "adam", "learning_rate": 1e-3, "epsilon": 1e-8}},
    # sampled softmax over the same columns, HCRNN's Adam
    "sampled-softmax": {"model": {"loss": "sampled-softmax", **RECIPE},
                        "fit": {"optimizer": "adam", "learning_rate": 1e-3, "epsilon": 1e-8}},
    # BPR-max with the official optimizer (Adagrad with momentum 0.4)
    "bpr-max-adagradm": {"model": {"loss": "bpr-max", "bpreg": 1.95, "elu_param": 0.5, **RECIPE},
                         "fit": {"optimizer": "adagradm", "learning_rate": 0.05, "momentum": 0.4,
                                 "epsilon": 1e-6}},
}
TARGETS = {  # R@3 / R@20 / M@3 / M@20
    "official GRU4Rec bpr-max (Hidasi's PyTorch code, conservative ties)":
        {"recall@3": 10.37, "recall@20": 25.38, "mrr@3": 7.62, "mrr@20": 9.57},
    "tfrec GRU4Rec, official recipe (3 seeds, conservative ties)":
        {"recall@3": 11.56, "recall@20": 25.70, "mrr@3": 8.38, "mrr@20": 10.16},
    "HCRNN-3+Bi, paper (Table 3, optimistic ties)":
        {"recall@3": 9.33, "recall@20": 25.81, "mrr@3": 6.74, "mrr@20": 8.70},
    "tfrec HCRNN-3+Bi causal form, cross-entropy (hcrnn_table3, 5 seeds)":
        {"recall@3": 9.25, "recall@20": 25.58, "mrr@3": 6.63, "mrr@20": 8.57},
}
GOAL = "official GRU4Rec bpr-max (Hidasi's PyTorch code, conservative ties)"


def protocols():
    from tfrec.evaluation import PROTOCOLS, Protocol

    return {"hcrnn": PROTOCOLS["hcrnn"], "hcrnn_conservative": PROTOCOLS["hcrnn_conservative"],
            "conservative_no_padding": Protocol(ks=(3, 20), metrics=("recall", "mrr"), ties="conservative",
                                                exclude_padding=True, scale=100.0)}


def run_one(variant: str, seed: int, data, budget_s: float, max_epochs: int, patience: int,
            model_opts: dict, state_dir=None, key=None) -> dict:
    """Trains, selects the best-valid epoch and tests one run. With ``state_dir``
    the run keeps a per-epoch backup (model + optimizer, Keras ``BackupAndRestore``),
    its validation state and its per-epoch progress, so a run stopped by the
    budget (or killed) continues where it stopped when the same command runs again."""
    import keras

    from tfrec.evaluation import evaluate
    from tfrec.models.hcrnn import HCRNN
    from tfrec.training.runs import make_optimizer, seconds_per_epoch

    spec = VARIANTS[variant]
    keras.utils.set_random_seed(seed)
    mcfg = {**BASE, **spec["model"], **model_opts, "seed": seed}
    model = HCRNN(num_items=data.num_items, **mcfg)
    model.compile(optimizer=make_optimizer(spec["fit"]))
    run_dir = os.path.join(state_dir, key.replace(":", "_").replace("/", "_")) if state_dir else None
    load0 = os.getloadavg()
    fitted = fit_resumable(model, data, budget_s=budget_s, max_epochs=max_epochs, patience=patience, run_dir=run_dir)
    tests = {f"test_{k}": evaluate(model, data.test, protocol=p) for k, p in protocols().items()}
    epochs_run = fitted["epochs_run"]
    return {
        "variant": variant, "seed": seed, "model_config": model.get_config(), "fit_config": spec["fit"],
        "best_epoch": model.best_epoch, "epochs_run": epochs_run, "capped": fitted["capped"],
        "early_stopped": fitted["early_stopped"],
        "max_epochs": max_epochs, "patience": patience,
        "valid": model.best_metrics, **tests,
        "history": fitted["history"],
        "epoch_seconds": fitted["epoch_seconds"], "seconds_per_epoch": seconds_per_epoch(fitted["epoch_seconds"]),
        "train_wall_seconds": fitted["train_wall_seconds"], "invocations": fitted["invocations"], "state_dir": state_dir,
        "load_average_at_start": load0, "load_average_at_end": os.getloadavg(),
        "git_commit": git_commit(), "finished_utc": datetime.datetime.utcnow().isoformat(timespec="seconds"),
    }


def _stats(runs, block, m):
    return mean_std([r[block][m] for r in runs])


def summarize(runs: list) -> dict:
    """Per variant: test metrics mean +- std (ddof 1) under each protocol, valid R@20.
    The selected variant is the one with the best mean valid R@20 over the seeds
    every variant has run (the selection seeds); test numbers play no part."""
    by = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    common = set.intersection(*[{r["seed"] for r in rs} for rs in by.values()]) if by else set()
    rows = {}
    for v, rs in by.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        sel = [r["valid"]["recall@20"] for r in rs if r["seed"] in common]
        rows[v] = {"seeds": [r["seed"] for r in rs],
                   "valid_recall@20": _stats(rs, "valid", "recall@20"),
                   "valid_mrr@20": _stats(rs, "valid", "mrr@20"),
                   "selection_valid_recall@20": float(np.mean(sel)) if sel else None,
                   "best_epochs": [r["best_epoch"] for r in rs], "epochs_run": [r["epochs_run"] for r in rs],
                   "capped": [r["capped"] for r in rs],
                   **{f"test_{k}": {m: _stats(rs, f"test_{k}", m) for m in METRICS} for k in protocols()},
                   "seconds_per_epoch": float(np.median([r["seconds_per_epoch"] for r in rs]))}
    selected = max((v for v in rows if rows[v]["selection_valid_recall@20"] is not None),
                   key=lambda v: rows[v]["selection_valid_recall@20"], default=None)
    return {"rows": rows, "selected": selected, "selection_seeds": sorted(common)}


def verdict(summary: dict) -> str:
    sel = summary.get("selected")
    if not sel:
        return "No runs yet."
    row = summary["rows"][sel]
    goal = TARGETS[GOAL]
    parts = []
    for m in ("recall@20", "mrr@20"):
        ours = row["test_hcrnn_conservative"][m]["mean"]
        parts.append(f"{m.replace('recall', 'R').replace('mrr', 'M')} {ours:.2f} vs {goal[m]:.2f} "
                     f"({'beats' if ours > goal[m] else 'does NOT beat'} it, {ours - goal[m]:+.2f})")
    n = row["test_hcrnn_conservative"]["recall@20"]["n"]
    capped = [sd for sd, c in zip(row["seeds"], row["capped"]) if c]
    cap = (f" CAPPED by the wall-clock budget (not early-stopped, so not converged): seed(s) {capped}."
           if capped else " Every run early-stopped (patience) or reached max epochs.")
    return (f"Selected on valid R@20: **{sel}** ({n} seed{'s' if n > 1 else ''}: {row['seeds']}). "
            f"Test (mean over seeds), conservative ties (padding ranked), against the official GRU4Rec: "
            + "; ".join(parts) + "." + cap)


def write_markdown(payload: dict, path_md: str) -> None:
    s = payload.get("summary") or {}
    lines = ["# HCRNN-3+Bi with the GRU4Rec training recipe (issue #4 moonshot), CiteULike hcrnn split", "",
             "Causal form (theta_t from the prefix up to t; whole sequences, a target at every step; 19 sequences "
             "per length-bucketed batch, summed loss / 512, as the causal rows of hcrnn_table3), HCRNN "
             "hyper-parameters of the paper; only the training loss / negatives / optimizer differ. Early "
             "stopping and variant selection on VALIDATION R@20 (hcrnn protocol); test evaluated once at the "
             "best-validation epoch (weights restored). x100, every test prefix once.", "",
             "Commands:", ""]
    lines += [f"    {c}" for c in payload.get("commands", [])]
    lines += ["", "## Verdict", "", verdict(s), ""]
    var_rows = []
    for v, r in (s.get("rows") or {}).items():
        spec = payload.get("variants", {}).get(v.split("[")[0], {})
        var_rows.append({"variant": v + (" (selected)" if v == s.get("selected") else ""),
                         "loss / negatives / optimizer": f"{spec.get('model', {})} / {spec.get('fit', {})}",
                         "seeds": ",".join(map(str, r["seeds"])),
                         "valid R@20": _fmt(r["valid_recall@20"]), "valid M@20": _fmt(r["valid_mrr@20"]),
                         "best ep / ep run": f"{r['best_epochs']} / {r['epochs_run']}",
                         "capped": ", ".join("yes" if c else "no" for c in r["capped"]),
                         "s/epoch": f"{r['seconds_per_epoch']:.1f}"})
    lines += ["## Variants (selection on valid R@20 over the seeds every variant ran: "
              f"{s.get('selection_seeds', [])})", "",
              md_table(var_rows, ["variant", "loss / negatives / optimizer", "seeds", "valid R@20", "valid M@20",
                                  "best ep / ep run", "capped", "s/epoch"]), ""]
    test_rows = []
    for v, r in (s.get("rows") or {}).items():
        for k in protocols():
            t = r[f"test_{k}"]
            test_rows.append({"row": f"{v} ({len(r['seeds'])} seed{'s' if len(r['seeds']) > 1 else ''})",
                              "ties / padding": k, **{m: _fmt(t[m]) for m in METRICS}})
    for name, t in TARGETS.items():
        test_rows.append({"row": name, "ties / padding": "reference", **{m: f"{t[m]:.2f}" for m in METRICS}})
    lines += ["## Test (at the best-validation epoch)", "",
              "`hcrnn` = optimistic ties, padding ranked (the HCRNN authors' evaluation); `hcrnn_conservative` = "
              "conservative ties, padding ranked; `conservative_no_padding` = the official GRU4Rec evaluation "
              "(conservative, no padding class). Mean ± std (ddof 1) over seeds.", "",
              md_table(test_rows, ["row", "ties / padding", *METRICS]), ""]
    notes = payload.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["Machine: " + payload.get("machine", "")]
    with open(path_md, "w") as f:
        f.write("\n".join(lines) + "\n")


def _fmt(st):
    return format_mean_std(st) if st else "-"


def _kv(pairs):
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``, as the CLI's ``--model-opt``."""
    from tfrec.cli import _parse_kv

    return _parse_kv(pairs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="*", default=["bpr-max"], choices=sorted(VARIANTS))
    ap.add_argument("--seeds", default="10", help="comma-separated")
    ap.add_argument("--budget-minutes", type=float, default=30.0, help="wall budget per run (training)")
    ap.add_argument("--max-epochs", type=int, default=80)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model option for every run of this invocation (recorded in the run)")
    ap.add_argument("--data", default="hcrnn:hcrnn_citeulike")
    ap.add_argument("--out", default=os.path.join(HERE, "results", f"{NAME}.json"))
    ap.add_argument("--no-launch-after", default=None, metavar="HH:MM",
                    help="UTC time after which no new run starts (runs already started finish)")
    ap.add_argument("--note", action="append", default=[], help="a note stored in the results (repeatable)")
    ap.add_argument("--state-dir", default=None,
                    help="keep per-run backups and validation state here (outside snapshots, e.g. "
                         "/work/moonshot_state); a capped or killed run resumes when the same command runs "
                         "again; a finished (not capped) run is skipped")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out_md = os.path.splitext(args.out)[0] + ".md"
    command = "python benchmarks/hcrnn_moonshot.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def finish(d):
        d["summary"] = summarize(d.get("runs", []))
        d["variants"], d["targets"], d["goal"] = VARIANTS, TARGETS, GOAL
        d["notes"] = list(dict.fromkeys(d.get("notes", []) + args.note))
        d["machine"] = (f"{platform.node()}, {os.cpu_count()} CPUs shared with other engineers' jobs; "
                        "s/epoch = median training seconds per epoch after the first (validation excluded)")
        return d

    if args.report_only:
        locked_update(args.out, finish)
        with open(args.out) as f:
            write_markdown(json.load(f), out_md)
        return

    from tfrec.data.specs import load_spec

    data = load_spec(args.data)
    opts = _kv(args.model_opt)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants:
            if args.no_launch_after:
                now = datetime.datetime.utcnow().strftime("%H:%M")
                if now > args.no_launch_after:
                    print(f"=== {variant}:{seed}: not started ({now} UTC > {args.no_launch_after}) ===", flush=True)
                    continue
            label = variant + ("[" + ",".join(f"{k}={v}" for k, v in sorted(opts.items())) + "]" if opts else "")
            key = f"{label}:{seed}"  # a modified recipe is its own row
            if args.state_dir and finished_earlier(args.out, key):
                print(f"=== {key}: finished earlier (not capped), skipped ===", flush=True)
                continue
            print(f"=== {key} ===", flush=True)
            res = run_one(variant, seed, data, args.budget_minutes * 60, args.max_epochs, args.patience, opts,
                          args.state_dir, key)
            res["variant"] = label
            res["key"], res["command"], res["model_opt"] = key, command, opts
            print(json.dumps({k: res[k] for k in ("key", "best_epoch", "epochs_run", "capped", "valid",
                                                  "test_hcrnn_conservative", "seconds_per_epoch")},
                             default=float), flush=True)

            def merge(d, res=res):
                d["runs"] = [r for r in d.get("runs", []) if r.get("key") != res["key"]] + [res]
                d["commands"] = list(dict.fromkeys(d.get("commands", []) + [command]))
                return finish(d)

            locked_update(args.out, merge)
            with open(args.out) as f:
                write_markdown(json.load(f), out_md)


if __name__ == "__main__":
    main()
