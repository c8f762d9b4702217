"""``pdsweep report`` and ``pdsweep ui``: what a sweep found, in Markdown, a plot and MLflow."""

from __future__ import annotations

import argparse
import json
import sys

from pdsweep.cli._base import Command, json_flag, runs_dir_flag
from pdsweep.errors import PdsweepError


class Report(Command):
    name = "report"
    help = "best config per budget tier, Pareto frontier, plot"
    description = ("Read a sweep's results.parquet and write report.md and report.png (best config per budget tier "
                   "with runner-up and margin, Pareto frontiers, plot); log them to the sweep's MLflow parent run. "
                   "Two names compare the sweeps side by side.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="+", metavar="NAME", help="sweep name(s)")
        runs_dir_flag(parser)
        parser.add_argument("--out", metavar="DIR", help="where to write report.md and report.png (default: the sweep folder)")
        parser.add_argument("--to-mlflow", action="store_true", help="back-fill MLflow with trials it is missing")
        parser.add_argument("--layout", choices=["tiers", "paper"], default="tiers",
                            help="tiers: best config per budget tier (default); paper: a recipe's listed configs side "
                                 "by side with the difference against each group's baseline, and robustness curves")
        json_flag(parser, "print the report as JSON")

    def take_action(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        from pdsweep.results import report, tracking
        from pdsweep.sweep.files import load_sweep

        if args.layout == "paper":
            return _paper(args)
        sweeps = [load_sweep(name, args.runs_dir) for name in args.names]
        reports = [report.build(s.name, s.rows, **s.options) for s in sweeps]
        outputs = []
        for sweep, built in zip(sweeps, reports):
            out_dir = Path(args.out) / sweep.name if args.out and len(sweeps) > 1 else Path(args.out or sweep.folder / "report")
            md, png = report.write(built, out_dir)
            outputs.append((md, png))
            if sweep.mlflow:
                if args.to_mlflow:
                    tracking.check_reachable(sweep.mlflow.uri)
                    logged = tracking.backfill(sweep.mlflow, sweep.rows)
                    print(f"MLflow: back-filled {logged} trial(s) of {sweep.name!r}", file=sys.stderr)
                try:
                    tracking.log_artifacts(sweep.mlflow, [md, png])
                except Exception as error:  # the report stands without MLflow
                    print(f"pdsweep: warning: could not log the report to MLflow ({error}).", file=sys.stderr)
            elif args.to_mlflow:
                raise PdsweepError(f"sweep {sweep.name!r} was run without MLflow tracking; nothing to back-fill into.")
        if args.json:
            payload = reports[0].to_json() if len(reports) == 1 else {"sweeps": [r.to_json() for r in reports]}
            print(json.dumps(payload, indent=2, allow_nan=False))
        else:
            print(report.compare(reports) if len(reports) > 1 else report.markdown(reports[0]))
            for md, png in outputs:
                print(f"wrote {md} and {png}", file=sys.stderr)
        return 0


def _paper(args: argparse.Namespace) -> int:
    """``report --layout paper``: each recipe's table, ``paper.md`` and ``robustness.png``."""
    from pathlib import Path

    from pdsweep.results import tracking
    from pdsweep.results.paper import paper_markdown, paper_table, write_paper
    from pdsweep.sweep.files import load_sweep, sweep_space

    tables = []
    for name in args.names:
        sweep = load_sweep(name, args.runs_dir)
        space = sweep_space(name, args.runs_dir)
        if not space.configs:
            raise PdsweepError(f"sweep {name!r} searched the axes of space {space.name!r}; --layout paper is for a "
                               "recipe (a space that lists its configs, e.g. search_spaces/paper/keep_rate.yaml); "
                               "drop --layout for the per-tier report.")
        table = paper_table(name, space.name, space.description, space.configs, sweep.rows)
        out_dir = Path(args.out) / name if args.out and len(args.names) > 1 else Path(args.out or sweep.folder / "report")
        written = write_paper(table, out_dir)
        if sweep.mlflow:
            try:
                tracking.log_artifacts(sweep.mlflow, written)
            except Exception as error:  # the report stands without MLflow
                print(f"pdsweep: warning: could not log the report to MLflow ({error}).", file=sys.stderr)
        tables.append((table, written))
    if args.json:
        payload = [table.to_json() for table, _ in tables]
        print(json.dumps(payload[0] if len(payload) == 1 else {"sweeps": payload}, indent=2, allow_nan=False))
    else:
        print("\n".join(paper_markdown(table) for table, _ in tables))
        for _, written in tables:
            print(f"wrote {' and '.join(map(str, written))}", file=sys.stderr)
    return 0


class Ui(Command):
    name = "ui"
    help = "the MLflow UI for the sweeps' tracking store"
    description = ("Start the MLflow UI on 127.0.0.1 for the tracking store of --runs-dir (or --mlflow-uri) and print "
                   "its URL; stop it with Ctrl-C.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        runs_dir_flag(parser)
        parser.add_argument("--mlflow-uri", help="a tracking store other than RUNS_DIR/mlflow.db")
        parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default %(default)s)")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.results.ui import serve

        return serve(args.runs_dir, args.port, args.mlflow_uri)
