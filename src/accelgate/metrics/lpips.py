"""LPIPS as a pairwise metric (candidate image vs the reference backend's image, same prompt/seed).

The `lpips` wheel ships its calibrated linear layers (`lpips/weights/v0.1/{alex,vgg,squeeze}.pth`),
but its backbone comes from torchvision's ImageNet weights, which torchvision downloads on
first use. So the model is built with a random backbone (`pnet_rand=True`, nothing fetched)
and the backbone is then filled from the torchvision checkpoint resolved offline by
weights.py (torch hub cache or a configured path); a missing file is `MetricWeightsMissing`.
Lower is better; 0 means perceptually identical.
"""
from __future__ import annotations

import warnings

import torch

from accelgate.metrics.catalog import LPIPS_NETS
from accelgate.metrics.features import as_uint8_nchw
from accelgate.metrics.weights import MetricWeightsCorrupt, load_checkpoint, resolve_file


def _build(net: str):
    import lpips

    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net {net!r}; known: {', '.join(LPIPS_NETS)}")
    with warnings.catch_warnings():  # torchvision's deprecation of `pretrained=` inside lpips
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)


def load_backbone(model, state_dict: dict, key: str, path) -> None:
    """Copy torchvision `features.{i}.*` weights into lpips' `net.slice{k}.{i}.*` modules."""
    targets = {name: param for name, param in model.net.named_parameters()}
    by_layer = {}
    for name in targets:  # slice3.5.weight -> features.5.weight
        _, rest = name.split(".", 1)
        by_layer[f"features.{rest}"] = name
    missing = sorted(k for k in by_layer if k not in state_dict)
    if missing:
        raise MetricWeightsCorrupt(f"{key}: {path} lacks backbone keys {missing[:5]} "
                                   f"({len(missing)} missing); is it torchvision's {key.split('-')[1]} checkpoint?")
    with torch.no_grad():
        for source, target in by_layer.items():
            value = state_dict[source]
            if value.shape != targets[target].shape:
                raise MetricWeightsCorrupt(f"{key}: {path}: {source} has shape {tuple(value.shape)}, the "
                                           f"backbone needs {tuple(targets[target].shape)}")
            targets[target].copy_(value)


class LpipsMetric:
    """LPIPS (lpips 0.1 linear layers) on a torchvision backbone, held once, run batched."""

    def __init__(self, net: str = "alex", backbone: str | None = None, *, device="cpu", batch_size: int = 16,
                 random_backbone: bool = False):
        self.net = net
        self.model = _build(net)
        self.random_weights = random_backbone
        if random_backbone:
            self.label = f"LPIPS {net} (random-weight backbone: CPU test only)"
        else:
            key = f"lpips-{net}"
            path = resolve_file(key, backbone)
            state = load_checkpoint(path, key)
            if not isinstance(state, dict):
                raise MetricWeightsCorrupt(f"{key}: {path} holds a {type(state).__name__}, not a state dict")
            load_backbone(self.model, state, key, path)
            self.label = f"LPIPS {net} v0.1"
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval()
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, candidate_images, reference_images) -> torch.Tensor:
        """Per-pair LPIPS distance [N] between candidate[i] and reference[i]."""
        cand = as_uint8_nchw(candidate_images, "candidate images")
        ref = as_uint8_nchw(reference_images, "reference images")
        if cand.shape != ref.shape:
            raise ValueError(f"LPIPS: candidate {tuple(cand.shape)} vs reference {tuple(ref.shape)} (N, C, H, W); "
                             "pairs must match in count and size")
        out = []
        for start in range(0, cand.shape[0], self.batch_size):
            a = cand[start:start + self.batch_size].to(self.device).float() / 127.5 - 1
            b = ref[start:start + self.batch_size].to(self.device).float() / 127.5 - 1
            out.append(self.model(a, b).flatten().float().cpu())
        values = torch.cat(out)
        if not torch.isfinite(values).all():
            bad = (~torch.isfinite(values)).nonzero().flatten()[:10].tolist()
            raise ValueError(f"LPIPS: non-finite distances at pairs {bad}")
        return values
