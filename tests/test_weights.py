"""Pretrained weights: sources, the real huggingface_hub cache path offline, loading into any
grid (against timm's own resampling), saving timm-loadable files, and every bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

from pdsweep.config import Config
from pdsweep.errors import PdsweepError
from pdsweep.presets import get_preset
from pdsweep.space import parse_space
from pdsweep.space.weights import WeightSource
from pdsweep.training.data import load_dataset
from pdsweep.training.loop import evaluate, train
from pdsweep.training.models import build_member, build_model
from pdsweep.training.weights import (
    WeightsMissing, inspect, inspect_space, load_into, locate, open_weights, read_state, save_weights,
)
from pdsweep.space import TrainingSettings
from weights_cache import micro_state, write_hub_weights

REPO = "pdsweep-test/vit_micro_p4"


@pytest.mark.parametrize(("text", "kind", "location", "revision"), [
    ("timm/deit_tiny_patch16_224.fb_in1k", "hub", "timm/deit_tiny_patch16_224.fb_in1k", None),
    ("hf-hub:timm/deit_tiny_patch16_224.fb_in1k", "hub", "timm/deit_tiny_patch16_224.fb_in1k", None),
    ("timm/vit_small@v1.0", "hub", "timm/vit_small", "v1.0"),
    ("/data/w.safetensors", "file", "/data/w.safetensors", None),
    ("weights/w.pth", "file", "weights/w.pth", None),
    ("deit_tiny_patch16_224.fb_in1k", "timm", "deit_tiny_patch16_224.fb_in1k", None),
])
def test_a_source_is_a_hub_name_or_a_file_by_its_shape(text: str, kind: str, location: str, revision: str | None) -> None:
    source = WeightSource.parse(text)
    assert (source.kind, source.location, source.revision) == (kind, location, revision)


@pytest.mark.parametrize(("text", "match"), [
    ("", r"must be a hub name such as timm/"),
    (3, r"must be a hub name"),
    ("deit tiny", r"neither a hub name \(ORG/NAME\[@REVISION\], such as .*\), a timm name"),
    ("/etc/passwd", r"must be a timm state dict ending in \.safetensors"),
    ("a/b/c", r"neither a hub name"),
])
def test_a_malformed_source_says_every_form(text: object, match: str) -> None:
    with pytest.raises(PdsweepError, match=match):
        WeightSource.parse(text)


def test_hub_weights_load_offline_from_a_cache_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    state = micro_state()
    written = write_hub_weights(cache, REPO, state, model_args={"embed_dim": 64, "num_heads": 2, "depth": 2})
    source = WeightSource.parse(REPO)
    assert locate(source, cache) == written
    found = inspect(source, cache)
    assert (found.embed_dim, found.depth, found.num_heads, found.num_classes) == (64, 2, 2, 10)
    assert found.size_bytes == written.stat().st_size and len(found.sha256) == 64
    found.check_fits("vit_micro", get_preset("vit_micro"))
    member = build_member(Config("vit_micro", 32, 4, depth=2, num_classes=10, init="pretrained"))
    assert load_into(member, open_weights(found, cache)) == 2
    assert torch.equal(member.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    assert not torch.equal(member.head.weight, state["head.weight"])  # a fine-tuned trial's head starts fresh


def test_the_head_count_is_read_from_the_timm_architecture_when_no_model_args(tmp_path: Path) -> None:
    write_hub_weights(tmp_path, REPO, micro_state(), architecture="vit_small_patch16_224")  # 6 heads
    found = inspect(WeightSource.parse(REPO), tmp_path)
    assert found.num_heads == 6
    with pytest.raises(PdsweepError, match=r"have 6 attention heads, but vit_micro has 2; give weights trained with 2"):
        found.check_fits("vit_micro", get_preset("vit_micro"))


def test_a_timm_name_resolves_through_timm_to_its_hub_repository(tmp_path: Path) -> None:
    state = micro_state(model="deit_tiny", depth=1, patch_size=16, resolution=32)
    write_hub_weights(tmp_path, "timm/deit_tiny_patch16_224.fb_in1k", state, architecture="deit_tiny_patch16_224")
    found = inspect(WeightSource.parse("deit_tiny_patch16_224.fb_in1k"), tmp_path)
    assert (found.embed_dim, found.depth, found.num_heads) == (192, 1, 3)  # heads: timm's deit_tiny
    assert found.path.startswith(str(tmp_path / "models--timm--deit_tiny_patch16_224.fb_in1k"))
    with pytest.raises(PdsweepError, match=r"timm has no pretrained weights on the Hugging Face hub called 'deit_tiny'"):
        locate(WeightSource.parse("deit_tiny"), tmp_path)


def test_hub_weights_stay_pinned_to_the_snapshot_checked(tmp_path: Path) -> None:
    first = micro_state(seed=0)
    write_hub_weights(tmp_path, REPO, first)
    found = inspect(WeightSource.parse(REPO), tmp_path)
    # A later fetch brings a new snapshot and moves refs/main to it.
    root = tmp_path / "models--pdsweep-test--vit_micro_p4"
    newer = root / "snapshots" / ("b" * 40)
    newer.mkdir()
    from safetensors.torch import save_file

    save_file(micro_state(seed=1), str(newer / "model.safetensors"))
    (root / "refs" / "main").write_text("b" * 40)
    assert locate(WeightSource.parse(REPO), tmp_path).parent == newer
    assert torch.equal(open_weights(found, tmp_path)["blocks.0.attn.qkv.weight"], first["blocks.0.attn.qkv.weight"])


def test_a_hub_name_not_in_the_cache_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing, match=r"not in the Hugging Face cache .*run `hf download timm/not_cached --revision v2 "
                                             r"--cache-dir .*pdsweep weights fetch SPACE --cache-dir"):
        locate(WeightSource.parse("timm/not_cached@v2"), tmp_path)


def test_weights_resample_to_a_new_grid_and_patch_size_as_timm_does(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights([build_member(Config("vit_micro", 32, 4, depth=2))], path, model="vit_micro", num_heads=2)
    target = build_member(Config("vit_micro", 64, 8, depth=2, num_classes=3))
    load_into(target, read_state(path, str(path))[0])
    preset = get_preset("vit_micro")
    reference = timm.create_model(  # timm's own loading of the same file into the same shape
        preset.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path), "num_classes": 10},
        img_size=64, patch_size=8, embed_dim=64, num_heads=2, depth=2, num_classes=3,
    )
    assert target.pos_embed.shape == (1, 65, 64) and target.patch_embed.proj.weight.shape == (64, 3, 8, 8)
    for name in ("pos_embed", "patch_embed.proj.weight", "cls_token", "blocks.1.mlp.fc2.weight", "norm.weight"):
        assert torch.allclose(target.state_dict()[name], reference.state_dict()[name], atol=1e-6), name


def test_a_deeper_config_keeps_the_checkpoint_blocks_and_starts_the_rest_random() -> None:
    state = micro_state(depth=2)
    deeper = build_member(Config("vit_micro", 32, 4, depth=3))
    before = deeper.blocks[2].attn.qkv.weight.clone()
    assert load_into(deeper, state) == 2
    assert torch.equal(deeper.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])
    assert torch.equal(deeper.blocks[2].attn.qkv.weight, before)
    shallower = build_member(Config("vit_micro", 32, 4, depth=1))
    assert load_into(shallower, state) == 1


def test_saved_weights_give_identical_logits_and_timm_loads_them(tmp_path: Path) -> None:
    config = Config("vit_micro", 32, 4, depth=2, ensemble_size=2, num_classes=4)
    dataset = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "data")
    settings = TrainingSettings(epochs=1, batch_size=8, precision="fp32", augment=False)
    result = train(config, dataset, settings, save_weights_to=tmp_path / "trained.safetensors")
    assert result.saved_weights == (str(tmp_path / "trained.safetensors"), str(tmp_path / "trained-2.safetensors"))
    members = [build_member(config) for _ in range(2)]
    for member, path in zip(members, result.saved_weights):
        load_into(member, read_state(Path(path), path)[0], head=True)
    loaded = build_model(config)
    loaded.members = torch.nn.ModuleList(members)
    accuracy = evaluate(loaded, dataset.test, batch_size=8, device=torch.device("cpu"))["accuracy"]
    assert accuracy == result.test_accuracy  # the saved ensemble is the trained one
    preset = get_preset("vit_micro")
    reference = timm.create_model(preset.timm_name, pretrained=True,
                                  pretrained_cfg_overlay={"file": result.saved_weights[0], "num_classes": 4},
                                  img_size=32, patch_size=4, embed_dim=64, num_heads=2, depth=2, num_classes=4).eval()
    images = torch.rand(3, 3, 32, 32)
    members[0].eval()
    with torch.no_grad():
        assert torch.equal(reference(images), members[0](images))
    found = inspect(WeightSource.parse(result.saved_weights[0]))
    assert (found.num_heads, found.depth, found.num_classes) == (2, 2, 4)  # the heads from the file's metadata


def test_pretrained_members_share_the_backbone_and_differ_in_head_and_data(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights([build_member(Config("vit_micro", 32, 4, depth=2))], path, model="vit_micro", num_heads=2)
    found = inspect(WeightSource.parse(str(path)))
    config = Config("vit_micro", 32, 4, depth=2, ensemble_size=2, num_classes=4, init="pretrained")
    dataset = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "data")
    settings = TrainingSettings(epochs=1, batch_size=8, precision="fp32", lr=1e-12, warmup_epochs=0, augment=False)
    seen: list[list[int]] = [[], []]
    result = train(config, dataset, settings, pretrained=found)
    assert result.pretrained_blocks == 2 and result.weights == found
    from pdsweep.training import loop

    built, *_ = loop._build(config, settings, 5, torch.device("cpu"), found, None)
    first, second = built.members
    assert torch.equal(first.blocks[0].attn.qkv.weight, second.blocks[0].attn.qkv.weight)  # the same backbone
    assert not torch.equal(first.head.weight, second.head.weight)  # each its own fresh head
    # What each member saw: their first batches differ (their own data order).
    model = build_model(config)
    for k, member in enumerate(model.members):
        member.register_forward_pre_hook(lambda m, args, k=k: seen[k].append(float(args[0].sum())))

    optimizer = loop.make_optimizer(model, "sgd", lr=0.0, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loop._train_epoch(model, optimizer, scheduler, dataset.train, settings, "fp32", 1, 8, torch.device("cpu"))
    assert seen[0] != seen[1]


def test_a_random_config_takes_no_weights_and_a_pretrained_one_needs_them(tmp_path: Path) -> None:
    dataset = load_dataset("synthetic:40", 32, cache_dir=tmp_path / "data")
    with pytest.raises(PdsweepError, match=r"needs weights and a random one takes none"):
        train(Config("vit_micro", 32, 4, depth=1, num_classes=4, init="pretrained"), dataset, TrainingSettings(epochs=1))


def test_weights_changed_after_the_check_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights([build_member(Config("vit_micro", 32, 4, depth=1))], path, model="vit_micro", num_heads=2)
    found = inspect(WeightSource.parse(str(path)))
    save_weights([build_member(Config("vit_micro", 32, 4, depth=1))], path, model="vit_micro", num_heads=2)
    with pytest.raises(PdsweepError, match=r"are not the ones checked before the run \(SHA-256"):
        open_weights(found)


@pytest.mark.parametrize(("content", "match"), [
    (b"root:x:0:0:root:/root:/bin/bash\n", r"cannot be read as a state dict"),
    ("non-tensors", r"hold no state dict of tensors"),
    ("not-a-vit", r"hold no ViT \(no blocks.N"),
])
def test_a_file_that_is_not_vit_weights_is_refused(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "non-tensors":
        torch.save({"epoch": 3, "name": "x"}, path)
    else:
        torch.save({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(PdsweepError, match=match):
        inspect(WeightSource.parse(str(path)))


def test_a_checkpoint_of_another_width_is_refused_before_a_sweep(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_weights([build_member(Config("deit_tiny", 32, 8, depth=1))], path, model="deit_tiny", num_heads=3)
    space = parse_space({"axes": {"model": "vit_micro", "resolution": 32, "patch_size": 4, "keep_rate": 1},
                         "weights": {"vit_micro": str(path)}}, name="t")
    with pytest.raises(PdsweepError, match=r"are a ViT of width 192, but vit_micro has width 64"):
        inspect_space(space)
    missing = replace(space, weights={"vit_micro": WeightSource.parse(str(tmp_path / "gone.safetensors"))})
    with pytest.raises(WeightsMissing, match=r"vit_micro: weight file .*gone.safetensors' not found"):
        inspect_space(missing)
