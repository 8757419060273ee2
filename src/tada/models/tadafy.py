"""``tadafy``: turn a 2-D image CNN (or a 3-D video CNN) into a TAda video model, keeping its weights.

TAda2D is a ResNet-50 whose 3x3 convs became temporally adaptive. :func:`tadafy` applies that
operation to any network: each selected convolution becomes a :class:`TAdaConvBlock`, which

* computes per-frame calibration weights from the conv's input with a routing function
  (:class:`~tada.ops.RouteFuncMLP` over the conv's *input* channels),
* runs the conv as a :class:`~tada.ops.TAdaConv2d` (or :class:`~tada.ops.TAdaConv3d` when its
  kernel, stride or padding is temporal) holding the conv's own weight tensor, and
* adds the temporal average-pool branch of the TAda2D recipe, ``z + pool_bn(avgpool_t(z))``.

At initialisation the routing function returns exactly 1 (its last layer is zero) and ``pool_bn``
returns exactly 0 (gamma = beta = 0), so every block computes its original conv: the video model
is the image model applied to every frame. With the usual head (global average pool and a linear
layer) its logits are the per-frame logits averaged over frames, so a pretrained image model
starts where it was and learns temporal modelling from there.

Layouts: an image model (``nn.Conv2d``) is run on the clip's frames (B*T, C, H, W); a video model
(``nn.Conv3d``) is run on the clip (B, C, T, H, W) as it is.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.models.layers import TemporalAvgPool, frames_to_video, video_to_frames
from tada.ops.routing import RouteFuncMLP
from tada.ops.tadaconv import TAdaConv2d, TAdaConv3d

__all__ = [
    "CONV_PRESETS",
    "TAdaConvBlock",
    "TAdaVideoModel",
    "select_convs",
    "tadafy",
    "tadafy_summary",
]

CONV_PRESETS = ("spatial", "all", "none")
ConvFilter = Callable[[str, nn.Module], bool]


# ------------------------------------------------------------------------------------------------
# The block that replaces one conv
# ------------------------------------------------------------------------------------------------
class TAdaConvBlock(nn.Module):
    """A conv made temporally adaptive: routing function -> TAdaConv -> temporal average-pool branch.

    ``forward(x)`` takes frames (B*T, C, H, W) (``num_frames`` must be set: the video model sets
    it from each clip) or a clip (B, C, T, H, W), and returns what the original conv returned, in
    the same layout. ``pre_pad`` = (pad, mode) is an explicit ``F.pad`` before the TAdaConv, for
    padding the TAdaConv's own zero padding cannot express (reflect, replicate, circular, or an
    asymmetric 'same'); it commutes with the per-channel calibration of ``cal_dim="cin"``.
    """

    def __init__(
        self,
        conv: TAdaConv2d | TAdaConv3d,
        rf: RouteFuncMLP,
        *,
        pool_bn: nn.modules.batchnorm._BatchNorm | None = None,
        pool_kernel: int = 3,
        pre_pad: tuple[tuple[int, ...], str] | None = None,
        num_frames: int | None = None,
    ) -> None:
        super().__init__()
        if pool_bn is not None and (pool_kernel < 3 or pool_kernel % 2 != 1):
            raise ValueError(f"temporal pool kernel must be odd and >= 3 with a pool branch, got {pool_kernel}")
        self.conv = conv
        self.rf = rf
        self.pool = TemporalAvgPool(pool_kernel) if pool_bn is not None else None
        self.pool_bn = pool_bn
        self.pre_pad = pre_pad
        self.num_frames = num_frames
        self.init_weights()

    def init_weights(self) -> None:
        """The TAda2D init of the new parameters; the conv's weights are left as they are.

        The routing function's own init (:meth:`RouteFuncMLP.init_weights`: alpha == 1);
        ``pool_bn`` gamma = beta = 0 (the branch adds exactly 0).
        """
        self.rf.init_weights()
        if self.pool_bn is not None:
            nn.init.zeros_(self.pool_bn.weight)
            nn.init.zeros_(self.pool_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self._forward_frames(x)
        if x.dim() == 5:
            return self._forward_clip(x)
        raise ValueError(f"TAdaConvBlock takes frames (B*T, C, H, W) or a clip (B, C, T, H, W), got {tuple(x.shape)}")

    def _forward_frames(self, x: Tensor) -> Tensor:
        if self.num_frames is None:
            raise RuntimeError("TAdaConvBlock on frames needs num_frames (set by the video model from each clip)")
        alpha = self.rf(x, self.num_frames)  # from the conv's own (pre-stride) input
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad[0], mode=self.pre_pad[1])
        z = self.conv(x, alpha)
        if self.pool_bn is not None:
            z = z + self.pool_bn(self.pool(z, self.num_frames))
        return z

    def _forward_clip(self, x: Tensor) -> Tensor:
        alpha = self.rf(x)  # (B, C, T, 1, 1): one calibration per input frame
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad[0], mode=self.pre_pad[1])
        if isinstance(self.conv, TAdaConv3d):
            alpha = self._output_frame_alpha(alpha, frames_in=x.shape[2])
        z = self.conv(x, alpha)
        if self.pool_bn is not None:
            k = self.pool.kernel_size
            z = z + self.pool_bn(F.avg_pool3d(z, (k, 1, 1), stride=1, padding=(k // 2, 0, 0), count_include_pad=True))
        return z

    def _output_frame_alpha(self, alpha: Tensor, *, frames_in: int) -> Tensor:
        """The calibration of each output frame: the routing output at the frame under the kernel's centre.

        With 'same' temporal padding and stride 1 that is the output frame itself; with a temporal
        stride s it is every s-th frame. ``frames_in`` counts frames after any explicit pre-padding.
        """
        kt, st, dt = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        left = self.conv.padding[0] + (self.pre_pad[0][-2] if self.pre_pad is not None else 0)
        t_out = self.conv.output_frames(frames_in)
        centres = [t * st + dt * (kt // 2) - left for t in range(t_out)]
        frames = alpha.shape[2]
        if centres == list(range(frames)):
            return alpha
        if min(centres) < 0 or max(centres) >= frames:
            raise ValueError(
                f"TAdaConv3d with temporal kernel {kt}, stride {st}, dilation {dt} and padding {left}: the kernel "
                f"centres {centres} of its {t_out} output frames fall outside the {frames} input frames"
            )
        return alpha[:, :, centres]

    def extra_repr(self) -> str:
        return "" if self.pre_pad is None else f"pre_pad={self.pre_pad[0]}, pad_mode={self.pre_pad[1]!r}"


# ------------------------------------------------------------------------------------------------
# Converting one conv
# ------------------------------------------------------------------------------------------------
def _plain_conv_base(module: nn.Module) -> type[nn.Conv2d] | type[nn.Conv3d] | None:
    """nn.Conv2d / nn.Conv3d when ``module`` is one (a subclass must not change what forward computes)."""
    for base in (nn.Conv2d, nn.Conv3d):
        if isinstance(module, base):
            cls = type(module)
            if cls.forward is base.forward and cls._conv_forward is base._conv_forward:
                return base
            return None
    return None


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Conv3d))


def _padding_plan(conv: nn.Conv2d | nn.Conv3d) -> tuple[tuple[int, ...], tuple[tuple[int, ...], str] | None]:
    """(padding for the TAdaConv, explicit (F.pad amounts, mode) or None) reproducing the conv's padding."""
    dims = len(conv.kernel_size)
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            pairs = [(0, 0)] * dims
        else:  # "same": PyTorch puts the odd extra pixel on the right/bottom
            totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
            pairs = [(t // 2, t - t // 2) for t in totals]
    else:
        pairs = [(int(p), int(p)) for p in conv.padding]
    if conv.padding_mode == "zeros" and all(a == b for a, b in pairs):
        return tuple(a for a, _ in pairs), None
    amounts: list[int] = []
    for left, right in reversed(pairs):  # F.pad lists the last dimension first
        amounts += [left, right]
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return (0,) * dims, (tuple(amounts), mode)


def _shared_parameter(param: nn.Parameter, shape: Sequence[int]) -> nn.Parameter:
    """A parameter over the same storage as ``param`` (a view, whatever its strides) with a TAdaConv's shape:
    (Cout, Cin/g, kh, kw) or (Cout, Cin/g, 1, kh, kw) -> (1, 1, Cout, Cin/g, kh, kw); 3-D kernels and
    biases get the two leading singleton dimensions."""
    view = param.detach()
    if view.dim() == 5 and len(shape) == 6:
        view = view[:, :, 0]
    view = view[None, None]
    if tuple(view.shape) != tuple(shape):
        raise ValueError(f"cannot view a {tuple(param.shape)} parameter as {tuple(shape)}")
    return nn.Parameter(view, requires_grad=param.requires_grad)


def _tada_conv(conv: nn.Conv2d | nn.Conv3d, *, cal_dim: str) -> tuple[nn.Module, tuple | None]:
    """The TAdaConv computing ``conv`` (sharing its weight and bias tensors) and the explicit pre-padding."""
    padding, pre_pad = _padding_plan(conv)
    bias = conv.bias is not None
    common = dict(groups=conv.groups, bias=bias, cal_dim=cal_dim)
    kernel, stride, dilation = tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.dilation)
    temporal = len(kernel) == 3 and (kernel[0], stride[0], padding[0], dilation[0]) != (1, 1, 0, 1)
    with torch.device("meta"):  # shells: the parameters are the conv's own tensors, set below
        if len(kernel) == 2 or not temporal:
            tconv = TAdaConv2d(conv.in_channels, conv.out_channels, kernel[-2:], stride=stride[-2:],
                               padding=padding[-2:], dilation=dilation[-2:], **common)
        else:
            tconv = TAdaConv3d(conv.in_channels, conv.out_channels, kernel, stride=stride, padding=padding,
                               dilation=dilation, **common)
    tconv.weight = _shared_parameter(conv.weight, tconv.weight.shape)
    if bias:
        tconv.bias = _shared_parameter(conv.bias, tconv.bias.shape)
    return tconv, pre_pad


def _tada_block(conv: nn.Conv2d | nn.Conv3d, name: str, *, route_ratio: int, route_kernels: Sequence[int],
                pool_kernel: int, cal_dim: str, bn_eps: float, bn_momentum: float) -> TAdaConvBlock:
    if conv.in_channels // route_ratio < 1:
        raise ValueError(
            f"conv {name!r} has {conv.in_channels} input channels: routing ratio {route_ratio} leaves no hidden "
            f"channels; exclude it or lower the ratio"
        )
    tconv, pre_pad = _tada_conv(conv, cal_dim=cal_dim)
    device, dtype = conv.weight.device, conv.weight.dtype
    rf = RouteFuncMLP(conv.in_channels, ratio=route_ratio, kernels=tuple(route_kernels),
                      out_channels=conv.in_channels if cal_dim == "cin" else conv.out_channels,
                      bn_eps=bn_eps, bn_momentum=bn_momentum).to(device=device, dtype=dtype)
    pool_bn = None
    if pool_kernel > 1:
        bn_cls = nn.BatchNorm2d if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d
        pool_bn = bn_cls(conv.out_channels, eps=bn_eps, momentum=bn_momentum).to(device=device, dtype=dtype)
    return TAdaConvBlock(tconv, rf, pool_bn=pool_bn, pool_kernel=pool_kernel, pre_pad=pre_pad)


# ------------------------------------------------------------------------------------------------
# Which convs
# ------------------------------------------------------------------------------------------------
def select_convs(
    model: nn.Module,
    *,
    convs: str | ConvFilter = "spatial",
    stem: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names of the nn.Conv2d / nn.Conv3d modules of ``model`` that :func:`tadafy` converts.

    ``convs``: "spatial" (kernel > 1 in any dimension; the TAda2D choice), "all" (1x1 convs too),
    "none", or a function ``(name, conv) -> bool`` that decides alone (``stem``, ``include`` and
    ``exclude`` then do not apply). ``stem``: also the stem, the model's first conv (excluded by
    default, as in TAda2D). ``include`` / ``exclude``: shell patterns on module names
    (``"layer4.*"``); a non-empty ``include`` keeps only matching convs.
    """
    candidates = [(n, m) for n, m in model.named_modules() if _is_conv(m)]
    if callable(convs):
        return [n for n, m in candidates if convs(n, m)]
    if convs not in CONV_PRESETS:
        raise ValueError(f"convs must be one of {CONV_PRESETS} or a function (name, conv) -> bool, got {convs!r}")
    if convs == "none" or not candidates:
        return []
    stem_name = candidates[0][0]
    chosen = []
    for name, conv in candidates:
        if name == stem_name and not stem:
            continue
        if convs == "spatial" and max(conv.kernel_size) == 1:
            continue
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        chosen.append(name)
    return chosen


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, leaf, new)


# ------------------------------------------------------------------------------------------------
# The video model
# ------------------------------------------------------------------------------------------------
class TAdaVideoModel(nn.Module):
    """A tadafied network as a video classifier: (B, 3, T, H, W) -> logits (B, num_classes).

    ``net`` is the converted network. Image networks run on the frames; their head sees features
    pooled over the whole clip:

    * timm contract (``net`` has ``forward_features`` and ``forward_head``): ``forward_features``
      gives (B, C, T, h, w); ``forward_head`` lays the frames side by side as (B, C, T*h, w) for
      ``net.forward_head``, so its global pool covers the clip;
    * otherwise, with ``head`` (the network's classifier, moved out of it): ``forward_features``
      gives the per-frame outputs of the rest (B, C, T, ...); ``forward_head`` averages over T and
      applies ``head``;
    * otherwise: the network's per-frame outputs (B, K, T), averaged over T.

    A video network (``layout="clip"``) gets the clip as it is.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        num_frames: int,
        layout: str = "frames",
        head: nn.Module | None = None,
        classifier_name: str = "",
        converted: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if layout not in ("frames", "clip"):
            raise ValueError(f"layout must be 'frames' or 'clip', got {layout!r}")
        self.net = net
        self.head = head
        self.layout = layout
        self.classifier_name = classifier_name
        self.converted = tuple(converted)
        self.timm_contract = head is None and callable(getattr(net, "forward_features", None)) \
            and callable(getattr(net, "forward_head", None))
        self.num_frames = 0
        self.set_num_frames(num_frames)
        self._channels_last = False

    # --- frames ----------------------------------------------------------------------------------
    def set_num_frames(self, num_frames: int) -> None:
        """Tell every frames-layout TAda block how many frames a clip has (done by forward too)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)
        if self.layout == "frames":
            for module in self.net.modules():
                if isinstance(module, TAdaConvBlock):
                    module.num_frames = self.num_frames

    @property
    def channels_last(self) -> bool:
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        """Channels-last frames and 2-D kernels (the fast layout of oneDNN / cuDNN); shapes unchanged."""
        from tada.models.resnet import set_kernel_layout

        value = bool(value) and self.layout == "frames"
        fmt = torch.channels_last if value else torch.contiguous_format
        with torch.no_grad():
            for module in self.net.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=fmt)
        set_kernel_layout(self.net, channels_last=value)
        self._channels_last = value

    # --- timm-like contract ----------------------------------------------------------------------
    def _clip(self, x: Tensor | dict | list | tuple) -> Tensor:
        from tada.models.resnet import VideoResNet

        x = VideoResNet._video(x)
        if x.shape[2] != self.num_frames:
            self.set_num_frames(x.shape[2])
        return x

    def forward_features(self, x: Tensor | dict) -> Tensor:
        """Features with a time axis at dim 2: (B, C, T, h, w) for image networks with the timm contract."""
        x = self._clip(x)
        if self.layout == "clip":
            return self.net.forward_features(x) if self.timm_contract else self.net(x)
        b, t = x.shape[0], x.shape[2]
        frames = video_to_frames(x, channels_last=self._channels_last)
        if self.timm_contract:
            feats = self.net.forward_features(frames)
            if feats.dim() != 4:
                raise ValueError(f"net.forward_features must return (N, C, h, w) feature maps, "
                                 f"got {tuple(feats.shape)}")
            return frames_to_video(feats, t)
        out = self.net(frames)
        return out.reshape(b, t, *out.shape[1:]).movedim(1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features from :meth:`forward_features` -> logits (B, num_classes), or pooled features with pre_logits."""
        if self.layout == "clip":
            return self.net.forward_head(x, pre_logits=pre_logits) if self.timm_contract else x
        if self.timm_contract:
            b, c, t, h, w = x.shape
            return self.net.forward_head(x.reshape(b, c, t * h, w), pre_logits=pre_logits)
        pooled = x.mean(dim=2)
        if pre_logits or self.head is None:
            return pooled
        return self.head(pooled)

    def forward(self, x: Tensor | dict) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # --- classifier --------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        if self.head is not None:
            return self.head
        if callable(getattr(self.net, "get_classifier", None)):
            return self.net.get_classifier()
        raise AttributeError("this video model has no separate classifier (tadafy(..., classifier=NAME) sets one)")

    def reset_classifier(self, num_classes: int) -> None:
        """A new final linear layer with ``num_classes`` outputs (fine-tuning on other classes)."""
        if self.head is None:
            if not callable(getattr(self.net, "reset_classifier", None)):
                raise AttributeError("cannot reset the classifier: the network has no reset_classifier and tadafy "
                                     "was not given classifier=NAME")
            self.net.reset_classifier(num_classes)
            return
        owner, name, linear = _last_linear(self.head)
        new = nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None,
                        device=linear.weight.device, dtype=linear.weight.dtype)
        if owner is None:
            self.head = new
        else:
            setattr(owner, name, new)

    # --- 2-D weights -------------------------------------------------------------------------
    def _image_key(self, key: str) -> str:
        """The video model's state-dict key of an image-model key."""
        if self.head is not None and key.startswith(self.classifier_name + "."):
            return "head." + key[len(self.classifier_name) + 1:]
        owner, _, leaf = key.rpartition(".")
        if owner in self.converted:
            return f"net.{owner}.conv.{leaf}"
        return f"net.{key}"

    def _classifier_keys(self) -> tuple[str, ...]:
        """Prefixes of the classifier's keys in this model (they may differ from a file's class count)."""
        if self.head is not None:
            return ("head.",)
        try:
            classifier = self.get_classifier()
        except AttributeError:
            return ()
        return tuple(f"{name}." for name, m in self.named_modules() if m is classifier and name)

    def load_image_state_dict(self, state_dict: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
        """Load the image network's own state dict (before tadafy): returns (loaded, missing, dropped) keys.

        Conv weights take the TAdaConv's shape (a view, same values). Classifier keys whose shape
        differs (another class count) are dropped. Every other key of the model must come from the
        file, except the routing functions and pool-branch BNs (which keep their identity init);
        anything else is a ValueError naming the keys, and nothing is loaded.
        """
        own = self.state_dict()
        head_prefixes = self._classifier_keys()
        converted: dict[str, Tensor] = {}
        dropped, unknown, mismatched = [], [], []
        for key, value in state_dict.items():
            target = self._image_key(key)
            if target not in own:
                unknown.append(f"{key} -> {target}")
                continue
            shape = tuple(own[target].shape)
            if tuple(value.shape) != shape:
                if [s for s in value.shape if s != 1] == [s for s in shape if s != 1]:
                    value = value.reshape(shape)
                elif target.startswith(head_prefixes):
                    dropped.append(key)
                    continue
                else:
                    mismatched.append(f"{key}: file {tuple(value.shape)} vs model {target} {shape}")
                    continue
            converted[target] = value
        missing = [k for k in own if k not in converted]
        required = [k for k in missing if not _is_tada_extra(k) and not k.endswith("num_batches_tracked")
                    and not k.startswith(head_prefixes)]
        problems = []
        if unknown:
            problems.append(f"{len(unknown)} keys with no place in the model (e.g. {unknown[:3]})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
        if required:
            problems.append(f"{len(required)} model keys not in the file (e.g. {required[:3]})")
        if problems:
            raise ValueError("the image weights do not fit the tadafied network: " + "; ".join(problems))
        self.load_state_dict(converted, strict=False)
        return sorted(converted), missing, dropped


def _is_tada_extra(key: str) -> bool:
    return ".rf." in key or ".pool_bn." in key


def _last_linear(module: nn.Module) -> tuple[nn.Module | None, str, nn.Linear]:
    """(owner, attribute name, layer) of the last nn.Linear in ``module`` (owner None: module itself)."""
    if isinstance(module, nn.Linear):
        return None, "", module
    found = None
    for owner in module.modules():
        for name, child in owner.named_children():
            if isinstance(child, nn.Linear):
                found = (owner, name, child)
    if found is None:
        raise AttributeError(f"the classifier {type(module).__name__} has no nn.Linear to reset")
    return found


# ------------------------------------------------------------------------------------------------
# tadafy
# ------------------------------------------------------------------------------------------------
def _layout_of(model: nn.Module, layout: str) -> str:
    if layout != "auto":
        if layout not in ("frames", "clip"):
            raise ValueError(f"layout must be 'auto', 'frames' or 'clip', got {layout!r}")
        return layout
    kinds = {type(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}
    has_2d = any(issubclass(k, nn.Conv2d) for k in kinds)
    has_3d = any(issubclass(k, nn.Conv3d) for k in kinds)
    if has_2d and has_3d:
        raise ValueError("the network has both Conv2d and Conv3d layers: pass layout='frames' (it takes images) "
                         "or layout='clip' (it takes (B, C, T, H, W) clips)")
    if not (has_2d or has_3d):
        raise ValueError("the network has no nn.Conv2d or nn.Conv3d layer to make temporally adaptive")
    return "frames" if has_2d else "clip"


def tadafy(
    model: nn.Module,
    *,
    num_frames: int,
    convs: str | ConvFilter = "spatial",
    stem: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    route_ratio: int = 4,
    route_kernels: Sequence[int] = (3, 3),
    pool_kernel: int = 3,
    cal_dim: str = "cin",
    classifier: str = "",
    layout: str = "auto",
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> TAdaVideoModel:
    """Turn ``model`` into a TAda video model that, at initialisation, is ``model`` on every frame.

    ``model`` is converted in place and becomes the video model's ``net``: its convs are replaced
    and every weight tensor is kept (the TAdaConvs hold views of the same storage), so pass
    ``copy.deepcopy(model)`` to keep the image model. Which convs: see :func:`select_convs`
    (default: every conv with a kernel > 1 except the stem). Each becomes a :class:`TAdaConvBlock`
    with a routing function of ratio ``route_ratio`` and temporal kernels ``route_kernels`` over
    the conv's input channels and, for ``pool_kernel`` > 1, the TAda2D temporal average-pool
    branch. ``classifier``: the name of the network's final classifier module, for networks
    without timm's ``forward_features``/``forward_head`` (torchvision: "fc" for ResNets,
    "classifier" for others): its input is averaged over frames, and ``reset_classifier`` works.
    ``layout``: "auto" (Conv2d networks take frames, Conv3d networks clips), "frames" or "clip".
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    names = select_convs(model, convs=convs, stem=stem, include=include, exclude=exclude)
    layout = _layout_of(model, layout)
    modules = dict(model.named_modules())
    for name in names:
        conv = modules[name]
        if _plain_conv_base(conv) is None:
            raise TypeError(
                f"cannot make {name!r} ({type(conv).__module__}.{type(conv).__name__}) temporally adaptive: its "
                f"forward is not nn.Conv2d's / nn.Conv3d's; exclude it (exclude=[{name!r}])"
            )
        expected = nn.Conv2d if layout == "frames" else nn.Conv3d
        if not isinstance(conv, expected):
            raise TypeError(f"{name!r} is a {type(conv).__name__} in a {layout!r}-layout network (expects "
                            f"{expected.__name__}); pass layout explicitly or exclude it")
    head = None
    if classifier:
        if layout != "frames":
            raise ValueError("classifier= applies to image networks (layout 'frames')")
        head = model.get_submodule(classifier)
        if classifier in names or any(n.startswith(classifier + ".") for n in names):
            raise ValueError(f"the classifier {classifier!r} contains selected convs; exclude them")
        _replace(model, classifier, nn.Identity())
    for name in names:
        block = _tada_block(modules[name], name, route_ratio=route_ratio, route_kernels=route_kernels,
                            pool_kernel=pool_kernel, cal_dim=cal_dim, bn_eps=bn_eps, bn_momentum=bn_momentum)
        _replace(model, name, block)
    return TAdaVideoModel(model, num_frames=num_frames, layout=layout, head=head, classifier_name=classifier,
                          converted=names)


def tadafy_summary(model: TAdaVideoModel) -> dict[str, Any]:
    """Counts for logs: converted convs, image parameters, new (TAda) parameters."""
    new = sum(p.numel() for n, p in model.named_parameters() if _is_tada_extra(n))
    total = sum(p.numel() for p in model.parameters())
    return {"converted_convs": len(model.converted), "image_params": total - new, "tada_params": new}
