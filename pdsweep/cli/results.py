"""``pdsweep report`` and ``pdsweep ui``: what a sweep found, in Markdown, a plot and MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pdsweep.cli._base import Command, choices, json_flag, runs_dir_flag
from pdsweep.errors import PdsweepError

if TYPE_CHECKING:
    from pdsweep.objective import Objective
    from pdsweep.results.paper import PaperTable
    from pdsweep.space import SearchSpace
    from pdsweep.sweep.files import SweepFiles


class Report(Command):
    name = "report"
    help = "best config per budget tier, Pareto frontier, plot"
    description = ("Read a sweep's results.parquet and write report.md and report.png (best config per budget tier "
                   "with runner-up and margin, Pareto frontiers, plot); log them to the sweep's MLflow parent run. "
                   "Two names compare the sweeps side by side.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="+", metavar="NAME", help="sweep name(s)")
        runs_dir_flag(parser)
        parser.add_argument("--out", metavar="DIR", help="where to write report.md and report.png, or paper.md and robustness.png "
                                                         "(default: the sweep folder)")
        parser.add_argument("--to-mlflow", action="store_true", help="back-fill MLflow with trials it is missing")
        parser.add_argument("--layout", choices=["tiers", "paper"], default="tiers",
                            help="tiers: best config per budget tier (default); paper: a recipe's listed configs side "
                                 "by side with the difference against each group's baseline, and robustness curves")
        from pdsweep.objective import MetricName

        parser.add_argument("--metric", choices=choices(MetricName),
                            help="rank by this metric instead of the one the sweep searched under (every trial records "
                                 "all of them; written to report-METRIC/ unless --out is given)")
        json_flag(parser, "print the report as JSON")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.objective import Objective
        from pdsweep.results import paper, report, report_output
        from pdsweep.sweep.files import load_sweep, sweep_space

        # Every sweep is read and checked before anything is written.
        sweeps = [load_sweep(name, args.runs_dir) for name in args.names]
        objective = Objective(args.metric) if args.metric else None
        if args.layout == "paper":
            tables = [paper_table_of(sweep, sweep_space(sweep.name, args.runs_dir), objective) for sweep in sweeps]
        else:
            reports = [report.build(s.name, s.rows, **s.options, objective=objective) for s in sweeps]
        labels = [_check_backfill(sweep, args.runs_dir) if args.to_mlflow else None for sweep in sweeps]
        written = []
        for i, sweep in enumerate(sweeps):
            # A report under another metric than the search's goes beside the sweep's own, not over it.
            own = args.metric in (None, report.search_metric(sweep.rows))
            default_dir = sweep.folder / ("report" if own else f"report-{args.metric}")
            out_dir = Path(args.out) / sweep.name if args.out and len(sweeps) > 1 else Path(args.out or default_dir)
            files = paper.write_paper(tables[i], out_dir) if args.layout == "paper" else list(report_output.write(reports[i], out_dir))
            # Another metric's report goes beside the sweep's own in MLflow too (report-METRIC/).
            _to_mlflow(sweep, files, backfill=labels[i], artifact_path=None if own else default_dir.name)
            written.append(files)
        if args.json:
            payload = [t.to_json() for t in tables] if args.layout == "paper" else [r.to_json() for r in reports]
            print(json.dumps(payload[0] if len(payload) == 1 else {"sweeps": payload}, indent=2, allow_nan=False))
        else:
            if args.layout == "paper":
                print("\n".join(paper.paper_markdown(table) for table in tables))
            else:
                print(report_output.compare(reports) if len(reports) > 1 else report_output.markdown(reports[0]))
            for files in written:
                print(f"wrote {' and '.join(map(str, files))}", file=sys.stderr)
        return 0


def paper_table_of(sweep: SweepFiles, space: SearchSpace, objective: Objective | None = None) -> PaperTable:
    """A recipe sweep's paper table; a sweep that searched axes has none (one line, exit 2)."""
    from pdsweep.results.paper import paper_table

    if not space.configs:
        raise PdsweepError(f"sweep {sweep.name!r} searched the axes of space {space.name!r}; --layout paper is for a "
                           "recipe (a space that lists its configs, e.g. search_spaces/paper/keep_rate.yaml); "
                           "drop --layout for the per-tier report.")
    return paper_table(sweep.name, space.name, space.description, space.configs, sweep.rows, objective)


def _check_backfill(sweep: SweepFiles, runs_dir: str) -> dict[str, dict[str, str]]:
    """``--to-mlflow``: the sweep has a tracking store and it answers (before anything is written);
    returns the MLflow tags of its listed configs (none where its space no longer parses)."""
    from pdsweep.results import tracking
    from pdsweep.sweep.files import sweep_space

    if not sweep.mlflow:
        raise PdsweepError(f"sweep {sweep.name!r} was run without MLflow tracking; nothing to back-fill into.")
    try:
        tracking.check_reachable(sweep.mlflow.uri)
    except PdsweepError as error:
        raise PdsweepError(f"sweep {sweep.name!r}: {str(error).split('; ')[0]}; start it (or reach it) and run "
                           "report --to-mlflow again; without --to-mlflow the report is written all the same.") from None
    try:
        return tracking.listed_tags(sweep_space(sweep.name, runs_dir).configs)
    except PdsweepError:  # the trials are logged all the same, without a recipe's labels
        return {}


def _to_mlflow(sweep: SweepFiles, files: list[Path], *, backfill: dict[str, dict[str, str]] | None,
               artifact_path: str | None = None) -> None:
    """The report's files as artifacts of the sweep's parent run (and, with --to-mlflow, the trials
    MLflow is missing, ``backfill`` the tags of its listed configs); the report stands without MLflow."""
    from pdsweep.results import tracking

    if not sweep.mlflow:
        return
    if backfill is not None:
        logged = tracking.backfill(sweep.mlflow, sweep.rows, backfill)
        print(f"MLflow: back-filled {logged} trial(s) of {sweep.name!r}", file=sys.stderr)
    try:
        tracking.log_artifacts(sweep.mlflow, files, artifact_path)
    except Exception as error:  # the report stands without MLflow
        print(f"pdsweep: warning: could not log the report to MLflow ({error}).", file=sys.stderr)


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
