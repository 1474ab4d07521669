"""Multi-seed runs of a registered model: mean ± std of test metrics and speed.

Used by ``tfrec benchmark`` and by the scripts in ``benchmarks/``.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np


def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` of a list of per-seed numbers.

    ``std`` is the sample standard deviation (ddof 1), ``None`` for a single value:
    one seed has no spread to report. Every mean ± std over seeds in tfrec and its
    benchmarks comes from here.

    Example:

    >>> mean_std([25.70, 25.56, 25.44])["std"]
    0.13...
    >>> mean_std([9.0])
    {'mean': 9.0, 'std': None, 'n': 1}
    """
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        raise ValueError("mean_std needs at least one value")
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if vals.size > 1 else None,
            "n": int(vals.size)}


def format_mean_std(stat: dict, digits: int = 2) -> str:
    """``"m ± s"`` for a :func:`mean_std` dict, just ``"m"`` when it has one value."""
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else "")


def summarize_runs(runs: list, key: str = "test") -> dict:
    """``{metric: mean_std}`` over the runs' ``key`` dicts (see :func:`mean_std`)."""
    metrics = sorted({m for r in runs for m in (r.get(key) or {}) if isinstance(r[key][m], (int, float))})
    return {m: mean_std([r[key][m] for r in runs if m in (r.get(key) or {})]) for m in metrics}


def run_seeds(name: str, data, seeds: Iterable[int], model_config: Optional[dict] = None,
              fit_config: Optional[dict] = None, protocol: str = "default", verbose=0,
              data_spec: str = "") -> dict:
    """Trains ``name`` once per seed (early stopping on validation, test at the best
    epoch) and returns the per-seed results with their mean ± std.

    Example:

    >>> from tfrec.data import simulate_sessions
    >>> r = run_seeds("pop", simulate_sessions(100), seeds=[0, 1])
    >>> r["summary"]["recall@20"]["n"]
    2
    """
    from tfrec.training.runs import train  # imports Keras: not needed for the summaries

    runs = []
    for seed in seeds:
        fc = dict(fit_config or {})
        fc["seed"] = int(seed)
        mc = dict(model_config or {})
        _, res = train(name, data, model_config=mc, fit_config=fc, protocol=protocol,
                       verbose=verbose, data_spec=data_spec)
        runs.append({"seed": int(seed), "best_epoch": res.get("best_epoch"), "test": res.get("test", {}),
                     "valid": res.get("valid", {}), "seconds_per_epoch": res.get("seconds_per_epoch"),
                     "epochs_run": len(res.get("history", []))})
    spe = [r["seconds_per_epoch"] for r in runs if r["seconds_per_epoch"] is not None]
    return {"model": name, "protocol": protocol, "seeds": list(map(int, seeds)), "runs": runs,
            "summary": summarize_runs(runs),
            "seconds_per_epoch": float(np.median(spe)) if spe else None}
