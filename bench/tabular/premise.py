"""A semi-synthetic table with the PatchDropout study's premise, for searchers only.

    python bench/tabular/premise.py

The real tables here (``fashion_mnist``, ``fashion_long``, ``sign_digits``) are small models
trained for minutes on a CPU; on them the fewest tokens learn fastest, and every tier's best config
is its coarsest patch grid at keep rate 1. The study's claim is the other way round: trained long
enough, a finer grid or a larger image at a reduced keep rate beats full tokens at equal cost. A
search must find those configs too, so this table keeps every real thing about
``fashion_mnist.parquet`` (its configs, their costs, their seconds per epoch, its tiers) and
replaces the accuracies by a model of the premise:

- the final accuracy grows with the patch tokens before dropout (6 points per doubling of their
  count), the width and the depth, and falls a little with the keep rate dropped
  (``0.02 * (1 - keep)^2``: keep 0.5 is half a point below keep 1, as the study finds it level
  within noise);
- reduced keep rates lag early and catch up by the last epoch: the curve rises as
  ``(1 - exp(-epoch / tau)) / (1 - exp(-epochs / tau))`` of the final accuracy, with ``tau``
  growing as the keep rate falls (``0.6 / keep``), so keep 0.25 is far behind after epoch 1;
- each seed adds Gaussian noise of 0.4 points to every epoch.

So each tier's best is its finest grid at a reduced keep rate, and early stopping that compares
trials at epoch 1 stops it. It is written to ``premise.parquet`` with the layout of the others
(``bench/tabular/README.md``); ``bench/search.py --table bench/tabular/premise.parquet`` replays it.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fashion_mnist.parquet"
OUT = HERE / "premise.parquet"


def final_accuracy(row: dict) -> float:
    from pdsweep.presets import get_preset

    patches = (row["resolution"] // row["patch_size"]) ** 2
    width = get_preset(row["model"]).embed_dim
    return (0.5 + 0.06 * math.log2(patches) + 0.03 * math.log2(width / 64) + 0.01 * row["depth"]
            - 0.02 * (1 - row["keep_rate"]) ** 2)


def curve(row: dict, epochs: int, seed: int) -> list[float]:
    rng = random.Random(f"{row['config']}:{seed}")
    tau = 0.6 / row["keep_rate"]
    top = final_accuracy(row)
    return [min(1.0, max(0.0, top * (1 - math.exp(-e / tau)) / (1 - math.exp(-epochs / tau)) + rng.gauss(0, 0.004)))
            for e in range(1, epochs + 1)]


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(SOURCE)
    meta = json.loads(table.schema.metadata[b"pdsweep.tabular"])
    rows = table.to_pylist()
    epochs = len(rows[0]["val_accuracy"])
    for row in rows:
        row["val_accuracy"] = curve(row, epochs, row["seed"])
        row["test_accuracy"] = row["val_accuracy"][-1]
    meta = {**meta, "dataset": f"semi-synthetic: {SOURCE.name}'s configs, costs and seconds, the study's premise as "
                               "accuracies (bench/tabular/premise.py)"}
    out = pa.Table.from_pylist(rows).replace_schema_metadata({"pdsweep.tabular": json.dumps(meta)})
    pq.write_table(out, OUT, compression="zstd")
    print(f"wrote {OUT} ({len(rows)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
