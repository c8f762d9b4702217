from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.training.models import build_member, build_model, dropping_at_test, load_pretrained


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


def test_pretrained_weights_are_resampled_to_a_new_grid_and_patch_size(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = build_member(Config("vit_micro", 32, 4, depth=2, num_classes=10))
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    target = build_member(Config("vit_micro", 64, 8, depth=2, num_classes=3))
    load_pretrained(target, tmp_path / "w.safetensors")
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert target.pos_embed.shape == (1, 65, 64) and target.patch_embed.proj.weight.shape == (64, 3, 8, 8)
    assert torch.equal(target.pos_embed[:, 0], source.pos_embed[:, 0])  # class token's embedding kept
    assert target.head.out_features == 3  # a new head for the new classes


def test_pretrained_from_a_torch_checkpoint_and_bad_files(tmp_path: Path) -> None:
    member = build_member(Config("vit_micro", 32, 8, depth=1))
    torch.save({"model": build_member(Config("vit_micro", 32, 8, depth=1)).state_dict()}, tmp_path / "w.pth")
    load_pretrained(member, tmp_path / "w.pth")
    with pytest.raises(PdsweepError, match=r"pretrained weights '.*nope.pth' not found"):
        load_pretrained(member, tmp_path / "nope.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(PdsweepError, match=r"cannot be read"):
        load_pretrained(member, tmp_path / "junk.safetensors")
    torch.save({"model": build_member(Config("deit_tiny", 32, 8, depth=1)).state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(PdsweepError, match=r"match none of the model's blocks; is it a ViT of width 64"):
        load_pretrained(member, tmp_path / "wide.pth")
