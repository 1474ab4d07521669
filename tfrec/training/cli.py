"""``tfrec benchmark``: a registered model over several seeds (mean ± std)."""

from __future__ import annotations

import json


def cmd_benchmark(args):
    from tfrec.cli import _load_data, _parse_kv, format_table
    from tfrec.models import registry
    from tfrec.training.benchmark import format_mean_std, run_seeds

    try:
        registry.get(args.model)
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise SystemExit(f"error: --seeds must be comma-separated integers, got {args.seeds!r}")
    data = _load_data(args.data)
    fcfg = _parse_kv(args.fit_opt)
    if args.epochs:
        fcfg["epochs"] = args.epochs
    res = run_seeds(args.model, data, seeds, _parse_kv(args.model_opt), fcfg, args.protocol,
                    verbose=0, data_spec=args.data)
    res["data"] = args.data
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    if args.json:
        print(json.dumps(res))
        return
    row = {"model": args.model, **{k: format_mean_std(v, 4) for k, v in res["summary"].items()
                                   if k != "targets"}}
    if res["seconds_per_epoch"] is not None:
        row["s/epoch"] = f"{res['seconds_per_epoch']:.2f}"
    print(format_table([row], list(row)))


def add_commands(sub):
    b = sub.add_parser("benchmark", help="train a model over several seeds; mean ± std of test metrics")
    b.add_argument("model")
    b.add_argument("--data", required=True)
    b.add_argument("--seeds", default="10,20,30")
    b.add_argument("--protocol", default="default", choices=["default", "hcrnn"])
    b.add_argument("--epochs", type=int)
    b.add_argument("--model-opt", action="append", metavar="KEY=VALUE")
    b.add_argument("--fit-opt", action="append", metavar="KEY=VALUE")
    b.add_argument("--out", help="write the JSON result here")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_benchmark)
