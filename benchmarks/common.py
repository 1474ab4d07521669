"""Helpers shared by benchmark scripts: machine facts and result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import List

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def git_commit() -> str:
    """The short commit of the checkout the benchmark runs from ('' outside git, e.g. a snapshot)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return ""


def write_results(name: str, payload: dict, markdown: str) -> None:
    """Writes ``results/<name>.json`` and ``results/<name>.md``."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=2, default=float)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(markdown.rstrip() + "\n")


def md_table(rows: List[dict], columns: List[str]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows)
