"""``pdsweep submit``, ``jobs`` and ``logs``: pdsweep commands as Ray Jobs on a cluster."""

from __future__ import annotations

import argparse
import json
from typing import ClassVar

from pdsweep.cli._base import Command, json_flag
from pdsweep.errors import PdsweepError


def _address(args: argparse.Namespace) -> str:
    if not args.address:
        raise PdsweepError("give the cluster's dashboard with --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS).")
    return args.address


class Submit(Command):
    name = "submit"
    help = "run a pdsweep command on a Ray cluster, as a Ray Job"
    description = ("Submit `pdsweep ARGS` (after --) as a Ray Job, print its id, follow its logs and exit with its "
                   "status. Example: pdsweep submit --address http://HEAD:8265 -- run --budget-gflops 17.6 "
                   "--runs-dir s3://bucket/sweeps")
    groups = ("cluster",)
    takes_inner: ClassVar[bool] = True  # the words after `--` are the command to submit

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--working-dir", help="upload this folder with the job (Ray's runtime env working_dir)")
        parser.add_argument("--runtime-env", metavar="FILE", help="a Ray runtime env as YAML or JSON (pip, env_vars, ...)")
        parser.add_argument("--no-wait", action="store_true", help="print the job id and return at once")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.sweep.submit import submit

        return submit(_address(args), args.inner, working_dir=args.working_dir, runtime_env=args.runtime_env,
                      wait=not args.no_wait)


class Jobs(Command):
    name = "jobs"
    help = "the cluster's Ray Jobs"
    description = "List the Ray Jobs of the cluster at --address."
    groups = ("cluster",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        json_flag(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.sweep.submit import list_jobs

        found = list_jobs(_address(args))
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            for job in found:
                print(f"{job['id']:<32} {job['status']:<10} {job['entrypoint']}")
        return 0


class Logs(Command):
    name = "logs"
    help = "a Ray Job's logs"
    description = "Show (or --follow) the logs of Ray Job ID."
    groups = ("cluster",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job_id", metavar="ID", help="the job's id, as `pdsweep submit` printed it")
        parser.add_argument("--follow", action="store_true", help="follow until the job ends; exit with its status")

    def take_action(self, args: argparse.Namespace) -> int:
        from pdsweep.sweep.submit import show_logs

        return show_logs(_address(args), args.job_id, follow=args.follow)
