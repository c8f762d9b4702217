from __future__ import annotations

import torch

from pdsweep.config import Config
from pdsweep.training.models import build_model, dropping_at_test


def test_ensemble_prediction_is_the_mean_of_its_members_softmax() -> None:
    torch.manual_seed(0)
    model = build_model(Config("vit_micro", 32, 8, depth=1, ensemble_size=3, num_classes=5)).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        each = [member(images).softmax(-1) for member in model.members]
    assert torch.allclose(model.predict_proba(images), torch.stack(each).mean(0), atol=1e-6)
    assert torch.allclose(model.predict_proba(images).sum(-1), torch.ones(4))


def test_members_are_initialised_independently() -> None:
    model = build_model(Config("vit_micro", 32, 8, depth=1, ensemble_size=2))
    first, second = (m.blocks[0].attn.qkv.weight for m in model.members)
    assert not torch.equal(first, second)


def test_dropping_at_test_time_only_inside_the_context() -> None:
    model = build_model(Config("vit_micro", 32, 4, depth=1)).eval()
    seen: list[int] = []
    model.members[0].blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        with dropping_at_test(model, 0.25):
            model(torch.zeros(1, 3, 32, 32))
        model(torch.zeros(1, 3, 32, 32))
    assert seen == [16 + 1, 64 + 1]
