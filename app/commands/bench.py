"""``fluoronav bench NAME [--json]``: figures measured against a baseline in the same run."""
from __future__ import annotations

import importlib
import json
import pkgutil


def _benchmarks():
    import app.bench as bench
    return {m.name: f"app.bench.{m.name}" for m in pkgutil.iter_modules(bench.__path__)}


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, modname in sorted(_benchmarks().items()):
        module = importlib.import_module(modname)
        bp = bsub.add_parser(name, help=module.DESCRIPTION)
        bp.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(bp)
        bp.set_defaults(func=lambda args, m=module: _run(m, args))


def _run(module, args) -> int:
    figures = module.run(args)
    if args.json:
        print(json.dumps(figures, default=float))
    else:
        for k, v in figures.items():
            print(f"{k}: {v}")
    return 0
