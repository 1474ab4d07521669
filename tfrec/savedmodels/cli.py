"""``tfrec export RUN_DIR BASE_DIR [--version N]``: a run's model as a TF Serving SavedModel."""

from __future__ import annotations

import json


def cmd_export(args):
    from tfrec.savedmodels.export import export_run

    kwargs = {}
    if args.oov:
        kwargs["oov"] = args.oov
    if args.step_window:
        kwargs["step_window"] = args.step_window
    if args.model_name:
        kwargs["model_name"] = args.model_name
    if args.step_mode:
        kwargs["step_mode"] = args.step_mode
    if args.data:
        from tfrec.data.specs import load_spec

        kwargs["data"] = load_spec(args.data)
    try:
        path = export_run(args.run_dir, args.base_dir, version=args.version, **kwargs)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(json.dumps({"run_dir": args.run_dir, "export_dir": path}))


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a run's model as a TF Serving SavedModel (BASE_DIR/<version>/)")
    p.add_argument("run_dir", help="tfrec run directory (tfrec train --out)")
    p.add_argument("base_dir", help="model base path, e.g. savedmodels/<model_name>")
    p.add_argument("--version", type=int, default=None, help="default: largest existing + 1")
    p.add_argument("--data", help="data spec for the vocabularies (default: the run's data spec)")
    p.add_argument("--oov", choices=["pad", "error"], help="unknown item ids: ignore or reject")
    p.add_argument("--step-window", type=int, help="history window of the generic step state")
    p.add_argument("--model-name", help="model name in warmup requests")
    p.add_argument("--step-mode", choices=["auto", "model", "window"],
                   help="step signature: the model's own O(1) step when it has one (auto, default), "
                        "require it (model), or the generic window state (window)")
    p.set_defaults(func=cmd_export)
