"""The driver's record of each trial that ends (the sweep tests run it under Tune)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pdsweep.config import Config
from pdsweep.results import rows as results
from pdsweep.space import load_space
from pdsweep.sweep import SweepSettings, TrialContext, TrialSpec
from pdsweep.sweep.callback import SweepCallback


def _trial(trial_id: str, *, epochs: int, accuracy: float, train_seconds: float) -> SimpleNamespace:
    space = load_space("quickstart")
    config = Config(model="vit_micro", resolution=32, patch_size=8, depth=1, keep_rate=0.5, num_classes=4)
    last = {"epoch": epochs, "val_accuracy": accuracy, "test_accuracy": accuracy, "done_training": True,
            "train_seconds": train_seconds, "time_total_s": train_seconds + 1}
    return SimpleNamespace(
        trial_id=trial_id, last_result=last, metric_analysis={"val_accuracy": {"max": accuracy}},
        config=TrialSpec(config, 0.0008, "search", 0, TrialContext(space.training, "synthetic", 0)).to_dict(),
    )


def test_a_trial_that_ended_before_a_resume_keeps_its_first_row(tmp_path: Path) -> None:
    settings = SweepSettings(name="s", space="quickstart", budgets=(0.0008,), runs_dir=str(tmp_path))
    settings.sweep_dir.mkdir(parents=True)
    first_driver = SweepCallback(settings, err=lambda line: None)
    first_driver.setup()
    first_driver.on_trial_result(0, [], _trial("a", epochs=1, accuracy=0.3, train_seconds=0), {"epoch": 1, "val_accuracy": 0.3})
    first_driver.on_trial_complete(0, [], _trial("a", epochs=6, accuracy=0.4, train_seconds=9.0))
    table = settings.sweep_dir / results.RESULTS_FILE
    before = results.read_rows(table)
    assert [(r.trial_id, r.train_seconds, len(r.history)) for r in before] == [("a", 9.0, 1)]

    # The driver died before Tune saved that "a" had ended: the next one sees it end again, from
    # its last checkpoint (no epochs, a fraction of the time).
    lines: list[str] = []
    second_driver = SweepCallback(settings, err=lines.append)
    second_driver.setup()
    second_driver.on_trial_complete(0, [], _trial("a", epochs=6, accuracy=0.4, train_seconds=0.1))
    second_driver.on_trial_complete(0, [], _trial("b", epochs=6, accuracy=0.5, train_seconds=8.0))
    after = {r.trial_id: r for r in results.read_rows(table)}
    assert after["a"] == before[0] and after["b"].train_seconds == 8.0
    assert any("its first result is kept" in line for line in lines)
