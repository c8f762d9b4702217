"""What Ray Tune hands a trainable: one trial's spec as a plain dict, and back."""

from __future__ import annotations

import pytest

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.space import TrainingSettings
from pdsweep.sweep.spec import SPEC_VERSION, TrialContext, TrialSpec

CONFIG = Config(model="vit_micro", resolution=32, patch_size=8, depth=2, keep_rate=0.5, num_classes=4)


def test_a_spec_survives_tunes_plain_dict() -> None:
    context = TrialContext(TrainingSettings(epochs=3), "synthetic:40", 7, cache_dir="/c", starts_log="/s",
                           memory_cap_gb=2.0, train_images=32, checkpoint_every_s=90.0)
    spec = TrialSpec(CONFIG, 0.5, "repeat", 11, context)
    values = spec.to_dict()
    assert values["schema_version"] == SPEC_VERSION and values["checkpoint_every_s"] == 90.0
    assert TrialSpec.from_dict(values) == spec


def test_older_and_newer_specs() -> None:
    values = TrialSpec(CONFIG, 0.5, "search", 0, TrialContext(TrainingSettings(), "synthetic", 0)).to_dict()
    older = {**values, "schema_version": 3}  # a trial saved before checkpoint intervals
    assert "checkpoint_every_s" not in older and TrialSpec.from_dict(older).context.checkpoint_every_s == 0.0  # every epoch
    with pytest.raises(PdsweepError, match=rf"schema version {SPEC_VERSION + 1} is newer .*upgrade pdsweep on every node"):
        TrialSpec.from_dict({**values, "schema_version": SPEC_VERSION + 1})
