"""Backbones and transfer: logits and gradients for every backbone x transfer, sharing, integration."""
from __future__ import annotations

import pytest
import torch

from genctr.errors import ConfigError
from genctr.models import GenCTR, ModelConfig, build_backbone, build_ctr_model
from genctr.models.config import BACKBONES, TRANSFERS

B, L, N_ITEMS, N_CATES = 4, 5, 12, 5
ITEM_CATE = torch.tensor([0, 0] + [2, 3, 4] * 3 + [2])


def make_cfg(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        n_users=6, n_items=N_ITEMS, n_cates=N_CATES, embed_dim=4, mlp_dims=(8,), cross_layers=2,
        attention_dims=(6,), dropout=0.0, max_seq_len=L, n_negatives=3,
        decoder={"d_model": 8, "n_heads": 2, "n_layers": 1, "dropout": 0.0},
    )
    base.update(kw)
    return ModelConfig(**base)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist_len = torch.tensor([5, 2, 0, 3])
    hist_item = torch.randint(2, N_ITEMS, (B, L), generator=g)
    hist_item[torch.arange(L) >= hist_len[:, None]] = 0
    item = torch.randint(2, N_ITEMS, (B,), generator=g)
    return {
        "user": torch.randint(2, 6, (B,), generator=g), "item": item, "cate": ITEM_CATE[item],
        "price": torch.rand(B, generator=g) * 50, "hist_item": hist_item, "hist_cate": ITEM_CATE[hist_item],
        "hist_len": hist_len, "label": torch.tensor([1.0, 0.0, 1.0, 0.0]),
    }


def pretrained(cfg: ModelConfig) -> GenCTR:
    torch.manual_seed(123)
    return GenCTR(cfg, ITEM_CATE)


@pytest.mark.parametrize("transfer", TRANSFERS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_and_transfer_gives_logits_and_gradients(backbone: str, transfer: str) -> None:
    cfg = make_cfg(backbone=backbone, transfer=transfer)
    torch.manual_seed(0)
    model = build_ctr_model(cfg, None if transfer == "none" else pretrained(cfg))
    logits = model(make_batch())
    assert logits.shape == (B,) and torch.all(torch.isfinite(logits))
    torch.nn.functional.binary_cross_entropy_with_logits(logits, make_batch()["label"]).backward()
    names = ["backbone.inputs.embedding.tables.item.weight", "backbone.inputs.embedding.tables.user.weight",
             "backbone.deep.net.0.weight", "backbone.head.weight"]
    if backbone != "dnn":
        names.append("backbone.cross.layers.0.linear.weight")
    if backbone == "dcnv2_ta":
        names.append("backbone.inputs.attention.score.net.0.weight")
    if transfer == "integrate":
        names += ["decoder.item_embedding.weight", "decoder.blocks.0.attn.q_proj.weight", "decoder.bos"]
    for name in names:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_share_copies_pretrained_embeddings_exactly() -> None:
    cfg = make_cfg(backbone="dcnv2", transfer="share")
    pre = pretrained(cfg)
    model = build_ctr_model(cfg, pre)
    tables = model.backbone.inputs.embedding
    assert torch.equal(tables["item"].weight, pre.item_embedding.weight)
    assert torch.equal(tables["cate"].weight, pre.cate_embedding.weight)
    assert model.decoder is None and not any(k.startswith("decoder.") for k in model.state_dict())
    with torch.no_grad():  # copies, not aliases: fine-tuning never touches the pretrained model
        tables["item"].weight.add_(1.0)
    assert not torch.equal(tables["item"].weight, pre.item_embedding.weight)
    fresh = build_ctr_model(make_cfg(backbone="dcnv2"))
    assert not torch.equal(fresh.backbone.inputs.embedding["item"].weight, pre.item_embedding.weight)


def test_integration_feeds_the_decoder_on_the_history() -> None:
    cfg = make_cfg(backbone="dnn", transfer="integrate")
    pre = pretrained(cfg)
    model = build_ctr_model(cfg, pre).eval()
    assert isinstance(model.decoder, GenCTR) and model.decoder is not pre
    assert torch.equal(model.backbone.inputs.embedding["item"].weight, pre.item_embedding.weight)
    batch = make_batch()
    out = model(batch)
    changed = dict(batch)
    changed["hist_item"] = batch["hist_item"].clone()
    changed["hist_item"][0, 1] = 2 + (batch["hist_item"][0, 1] - 1) % (N_ITEMS - 2)  # another real item
    feat = model.decoder.encode_target(batch["hist_item"], batch["hist_cate"], batch["hist_len"], batch["cate"])
    feat2 = model.decoder.encode_target(changed["hist_item"], batch["hist_cate"], batch["hist_len"], batch["cate"])
    assert not torch.allclose(feat[0], feat2[0]) and torch.allclose(feat[1:], feat2[1:])
    assert not torch.allclose(model(changed)[0], out[0])
    with torch.no_grad():  # the logits really depend on the decoder
        model.decoder.key_proj.weight.add_(torch.randn_like(model.decoder.key_proj.weight))
    assert not torch.allclose(model(batch), out)
    torch.testing.assert_close(model.backbone(batch, model.integration_feature(batch)), model(batch))


def test_pretrained_model_is_not_modified_by_fine_tuning() -> None:
    cfg = make_cfg(transfer="integrate")
    pre = pretrained(cfg).eval()  # as a loaded artifact arrives
    before = {k: v.clone() for k, v in pre.state_dict().items()}
    model = build_ctr_model(cfg, pre)
    assert model.decoder is not None and model.decoder.training and model.cfg is cfg
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model(make_batch()).sum().backward()
    opt.step()
    assert all(torch.equal(v, before[k]) for k, v in pre.state_dict().items())


@pytest.mark.parametrize("transfer", ["share", "integrate"])
def test_checkpoint_round_trip_with_stable_keys(transfer: str, tmp_path) -> None:
    import safetensors.torch as safetensors_torch
    cfg = make_cfg(backbone="dcnv2_ta", transfer=transfer)
    model = build_ctr_model(cfg, pretrained(cfg)).eval()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    with pytest.raises(ConfigError, match="pretrained"):
        build_ctr_model(cfg)
    loaded = build_ctr_model(cfg, for_loading=True).eval()
    assert loaded.cfg == cfg
    loaded.load_state_dict(safetensors_torch.load_file(str(path)))  # strict: same keys, same shapes
    batch = make_batch()
    torch.testing.assert_close(loaded(batch), model(batch))


def test_incompatible_pretrained_model_is_a_config_error() -> None:
    pre = pretrained(make_cfg())
    with pytest.raises(ConfigError, match="embed_dim"):
        build_ctr_model(make_cfg(embed_dim=8, transfer="share"), pre)
    with pytest.raises(ConfigError, match="decoder"):
        build_ctr_model(make_cfg(transfer="integrate", decoder={"d_model": 4, "n_heads": 2}), pre)


def test_backbone_extra_input_is_checked() -> None:
    net = build_backbone(make_cfg(), extra_dim=3)
    with pytest.raises(ValueError, match="extra"):
        net(make_batch())
    assert net(make_batch(), torch.zeros(B, 3)).shape == (B,)


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().float().pow(2).mean().sqrt())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_integration_feature_enters_at_the_scale_of_the_other_inputs(backbone: str) -> None:
    """The decoder's LayerNorm output is ~1 per dim, the embeddings beside it 0.02: concatenated raw
    it was ~50x louder here (~13x on MovieLens after pretraining). At init it must be within 2x."""
    cfg = make_cfg(backbone=backbone, transfer="integrate", integration_scale="match")
    model = build_ctr_model(cfg, pretrained(cfg)).eval()
    seen: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.update(extra=args[1]))
    batch = make_batch()
    batch["price"] = torch.zeros(B)  # MovieLens has no price; the log-price column is no embedding
    model(batch)
    extra = seen["extra"]  # [B, d_model]: what the backbone receives
    x0 = model.backbone.inputs(batch, extra)  # [B, out_dim]
    E = cfg.embed_dim
    other = torch.cat([x0[:, : 3 * E], x0[:, 3 * E + 1 : x0.shape[1] - extra.shape[1]]], dim=1)
    ratio = _rms(extra) / _rms(other)
    assert 0.5 <= ratio <= 2.0, ratio
    assert "integration.scale" in model.state_dict()


def test_integration_scale_none_is_the_raw_decoder_feature() -> None:
    cfg = make_cfg(transfer="integrate", integration_scale="none")
    pre = pretrained(cfg)
    model = build_ctr_model(cfg, pre).eval()
    assert model.integration is None and not any(k.startswith("integration") for k in model.state_dict())
    batch = make_batch()
    raw = pre.eval().encode_target(batch["hist_item"], batch["hist_cate"], batch["hist_len"], batch["cate"])
    torch.testing.assert_close(model.integration_feature(batch), raw)


def test_artifact_written_before_integration_scale_loads_with_the_raw_feature(tmp_path) -> None:
    import dataclasses

    from genctr.artifacts.files import save_artifact
    from genctr.artifacts.load import load_model

    cfg = make_cfg(transfer="integrate", integration_scale="none")
    model = build_ctr_model(cfg, pretrained(cfg)).eval()
    old = dataclasses.asdict(cfg)
    del old["integration_scale"]  # the model section as it was written before the option existed
    save_artifact(tmp_path / "old", model, {"kind": "ctr", "model": old}, None, {})
    loaded = load_model(tmp_path / "old")
    assert loaded.cfg.integration_scale == "none" and loaded.integration is None
    batch = make_batch()
    torch.testing.assert_close(loaded(batch), model(batch))
    new = build_ctr_model(make_cfg(transfer="integrate", integration_scale="match"), pretrained(cfg)).eval()
    save_artifact(tmp_path / "new", new, {"kind": "ctr", "model": dataclasses.asdict(new.cfg)}, None, {})
    again = load_model(tmp_path / "new")
    assert again.integration is not None and torch.equal(again.integration.scale, new.integration.scale)
    torch.testing.assert_close(again(batch), new(batch))


def test_transferred_tables_name_the_copied_embeddings() -> None:
    for transfer, n in (("none", 0), ("share", 2), ("integrate", 4)):
        cfg = make_cfg(transfer=transfer)
        model = build_ctr_model(cfg, None if transfer == "none" else pretrained(cfg))
        params = dict(model.named_parameters())
        assert len(model.transferred_tables) == n and all(name in params for name in model.transferred_tables)
