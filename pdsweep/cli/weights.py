"""``pdsweep weights check|fetch SPACE``: the pretrained weights a space names, on this machine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pdsweep.cli._base import Command, json_flag


class Weights(Command):
    name = "weights"
    help = "check or fetch the pretrained weights a space names"
    description = ("Resolve every weight source of a space (hub names into the Hugging Face cache, local files as "
                   "they are) and say which are present, with their size and SHA-256, and which are missing, with "
                   "the command that gets them. `fetch` downloads what is missing (a machine online); on a cluster, "
                   "fetch once into a shared cache and point `run --weights-cache` at it. Exit 1 if any is missing.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=("check", "fetch"), help="check: look only; fetch: download what is missing")
        parser.add_argument("space", help="a space file, or a bundled space name")
        parser.add_argument("--cache-dir", metavar="DIR",
                            help="the Hugging Face hub cache (default $HF_HUB_CACHE or $HF_HOME/hub)")
        json_flag(parser, "print one JSON object per source, in a list")

    def take_action(self, args: argparse.Namespace) -> int:
        """Exit 0: every source present and fitting its model; 1: some missing; 2: some unusable
        (not a ViT state dict, another width or head count: bad input)."""
        from pdsweep.space import load_space
        from pdsweep.training.weights import check_space_weights, default_cache

        space = load_space(args.space)
        cache = args.cache_dir or str(default_cache())
        checks = check_space_weights(space, cache, download=args.action == "fetch")
        entries: list[dict[str, Any]] = []
        for check in checks:
            entry: dict[str, Any] = {"model": check.model, "source": str(check.source), "kind": check.source.kind,
                                     "present": check.found is not None, "problem": check.problem}
            if check.found is not None:
                found = check.found
                entry.update(path=found.path, size_bytes=found.size_bytes, sha256=found.sha256, depth=found.depth,
                             embed_dim=found.embed_dim, num_heads=found.num_heads)
            entries.append(entry)
        if args.json:
            print(json.dumps({"space": space.name, "cache_dir": cache, "weights": entries}, indent=2))
        elif not entries:
            print(f"space {space.name!r} lists no weights: every trial starts from random initialisation.")
        for entry in entries if not args.json else ():
            if entry["present"]:
                heads = f", {entry['num_heads']} heads" if entry["num_heads"] is not None else ""
                print(f"{entry['model']}: {entry['source']}  present  {entry['size_bytes'] / 1e6:.1f} MB  sha256 "
                      f"{entry['sha256']}  ({entry['depth']} blocks, width {entry['embed_dim']}{heads})  {entry['path']}")
            else:
                label = "MISSING" if next(c for c in checks if c.model == entry["model"]).missing else "UNUSABLE"
                print(f"{entry['model']}: {entry['source']}  {label}  {entry['problem']}")
        if any(c.problem is not None and not c.missing for c in checks):
            return 2
        return 1 if any(c.missing for c in checks) else 0
