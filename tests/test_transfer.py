"""Part-wise weight transfer and weight hashes (cmrbench.benchmark.transfer)."""

from __future__ import annotations

import pytest
import torch

from cmrbench.benchmark.transfer import TransferError, state_dict_sha256, transfer_weights
from cmrbench.nets import create_net


def _pretrained(num_classes: int = 1, seed: int = 1) -> dict[str, torch.Tensor]:
    """A checkpoint of a MIM-like net with non-default BatchNorm statistics."""
    torch.manual_seed(seed)
    net = create_net("unet2d_xs", num_classes=num_classes, deep_supervision=False)
    with torch.no_grad():
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
    return {k: v.clone() for k, v in net.state_dict().items()}


def _fresh_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_net("unet2d_xs")


def _expected_counts(net: torch.nn.Module, part: str) -> tuple[int, int]:
    tensors = sum(1 for k in net.state_dict() if k.startswith(f"{part}."))
    params = sum(p.numel() for k, p in net.named_parameters() if k.startswith(f"{part}."))
    return tensors, params


def test_encoder_transfer_copies_encoder_tensors_bit_for_bit_and_leaves_the_rest() -> None:
    checkpoint = _pretrained()
    net = _fresh_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = transfer_weights(net, checkpoint, ("encoder",))
    after = net.state_dict()
    for key, value in after.items():
        if key.startswith("encoder."):
            assert torch.equal(value, checkpoint[key]), key
        else:
            assert torch.equal(value, before[key]), key
    tensors, params = _expected_counts(net, "encoder")
    assert report.parts["encoder"].tensors_loaded == tensors
    assert report.parts["encoder"].params_loaded == params
    assert report.parts["encoder"].skipped == []
    assert report.skipped == sorted(k for k in checkpoint if not k.startswith("encoder."))


def test_batchnorm_running_statistics_travel_with_their_part() -> None:
    checkpoint = _pretrained()
    net = _fresh_net()
    transfer_weights(net, checkpoint, ("encoder", "decoder"))
    key = "encoder.stages.0.1.running_mean"
    assert checkpoint[key].abs().sum() > 0
    assert torch.equal(net.state_dict()[key], checkpoint[key])
    assert torch.equal(
        net.state_dict()["decoder.blocks.0.1.running_mean"],
        checkpoint["decoder.blocks.0.1.running_mean"],
    )


def test_encoder_and_decoder_transfer_from_a_one_channel_net_skips_only_its_head() -> None:
    checkpoint = _pretrained(num_classes=1)
    net = _fresh_net()
    report = transfer_weights(net, checkpoint, ("encoder", "decoder"))
    for part in ("encoder", "decoder"):
        tensors, params = _expected_counts(net, part)
        assert report.parts[part].tensors_loaded == tensors
        assert report.parts[part].params_loaded == params
    assert report.skipped == sorted(k for k in checkpoint if k.startswith("head."))
    assert report.to_json() == {
        "parts": {
            part: {
                "tensors_loaded": report.parts[part].tensors_loaded,
                "params_loaded": report.parts[part].params_loaded,
                "skipped": [],
                "loaded": [k for k in net.state_dict() if k.startswith(f"{part}.")],
                "adapted": {},
                "random": [],
            }
            for part in ("encoder", "decoder")
        },
        "skipped": report.skipped,
    }


def test_a_part_missing_from_the_checkpoint_raises_and_leaves_the_net_untouched() -> None:
    checkpoint = {k: v for k, v in _pretrained().items() if not k.startswith("decoder.")}
    net = _fresh_net()
    before = state_dict_sha256(net)
    with pytest.raises(TransferError, match="'decoder' matched no key"):
        transfer_weights(net, checkpoint, ("encoder", "decoder"))
    assert state_dict_sha256(net) == before


def test_a_part_with_a_missing_tensor_raises_naming_the_key() -> None:
    checkpoint = _pretrained()
    del checkpoint["encoder.stages.2.3.weight"]
    with pytest.raises(TransferError, match=r"encoder\.stages\.2\.3\.weight"):
        transfer_weights(_fresh_net(), checkpoint, ("encoder",))


def test_a_shape_mismatch_raises_naming_the_keys_and_shapes() -> None:
    torch.manual_seed(0)
    wider = create_net("unet2d_s").state_dict()
    expected = r"encoder\.stages\.0\.0\.weight: checkpoint \(16, 1, 3, 3\) vs net \(8, 1, 3, 3\)"
    with pytest.raises(TransferError, match=expected):
        transfer_weights(_fresh_net(), wider, ("encoder",))


def test_checkpoint_tensors_the_net_lacks_are_listed_as_skipped_in_their_part() -> None:
    checkpoint = _pretrained()
    checkpoint["encoder.extra.weight"] = torch.zeros(3)
    report = transfer_weights(_fresh_net(), checkpoint, ("encoder",))
    assert report.parts["encoder"].skipped == ["encoder.extra.weight"]


def test_the_head_can_never_be_transferred() -> None:
    with pytest.raises(TransferError, match="'head'"):
        transfer_weights(_fresh_net(), _pretrained(num_classes=4), ("head",))


def test_weight_hash_is_equal_for_equal_weights_and_changes_with_one_element() -> None:
    first, second = _fresh_net(), _fresh_net()
    digest = state_dict_sha256(first)
    assert len(digest) == 64
    assert digest == state_dict_sha256(second) == state_dict_sha256(second.state_dict())
    with torch.no_grad():
        second.encoder.stages[0][0].weight[0, 0, 0, 0] += 1e-6
    assert state_dict_sha256(second) != digest


def test_a_partial_load_keeps_the_missing_and_misshapen_tensors_and_lists_them_as_random() -> None:
    checkpoint = _pretrained()
    del checkpoint["encoder.stages.2.3.weight"]
    checkpoint["encoder.stages.0.0.weight"] = torch.zeros(16, 1, 3, 3)
    net = _fresh_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = transfer_weights(net, checkpoint, ("encoder",), strict=False)
    part = report.parts["encoder"]
    assert part.random == ["encoder.stages.0.0.weight", "encoder.stages.2.3.weight"]
    assert part.skipped == ["encoder.stages.0.0.weight"]
    for key in part.random:
        assert torch.equal(net.state_dict()[key], before[key])
    assert torch.equal(
        net.state_dict()["encoder.stages.1.0.weight"], checkpoint["encoder.stages.1.0.weight"]
    )
    tensors, _ = _expected_counts(net, "encoder")
    assert part.tensors_loaded == tensors - 2 == len(part.loaded)


def test_adapted_tensors_are_reported_with_how_instead_of_as_loaded() -> None:
    checkpoint = _pretrained()
    report = transfer_weights(
        _fresh_net(),
        checkpoint,
        ("encoder",),
        adapted={"encoder.stages.0.0.weight": "summed over channels"},
    )
    part = report.parts["encoder"]
    assert part.adapted == {"encoder.stages.0.0.weight": "summed over channels"}
    assert "encoder.stages.0.0.weight" not in part.loaded
    assert part.tensors_loaded == len(part.loaded) + 1
