"""Video networks: the ResNet3D family (TAda2D, TSN) and TAdaConvNeXtV2 over frames, a registry, the zoo table.

    from tada.models import create_model, build_model
    model = create_model("tada2d_r50", num_classes=400)   # logits (B, 400) for (B, 3, T, H, W)
    model = build_model(cfg)                               # from a config
    video = tadafy(image_model, num_frames=8)              # any 2-D CNN as a TAda video model
"""

from tada.models.build import build_model, model_kwargs_from_cfg
from tada.models.convnext import TAdaConvNeXtV2Block, VideoConvNeXt, video_convnext
from tada.models.image import create_image_model, list_image_models, register_image_model
from tada.models.registry import create_model, is_model, list_models, register_model
from tada.models.resnet import (
    Base2DBlock,
    ResBlock,
    TAda2DBlock,
    VideoHead,
    VideoResNet,
    video_resnet,
)
from tada.models.tadafy import TAdaConvBlock, TAdaVideoModel, tadafy
from tada.models.zoo import ZOO, ZooEntry, get_weights, list_weights

__all__ = [
    "ZOO",
    "Base2DBlock",
    "ResBlock",
    "TAda2DBlock",
    "TAdaConvBlock",
    "TAdaVideoModel",
    "TAdaConvNeXtV2Block",
    "VideoHead",
    "VideoConvNeXt",
    "VideoResNet",
    "ZooEntry",
    "build_model",
    "create_image_model",
    "create_model",
    "get_weights",
    "is_model",
    "list_image_models",
    "list_models",
    "list_weights",
    "model_kwargs_from_cfg",
    "register_image_model",
    "register_model",
    "tadafy",
    "video_convnext",
    "video_resnet",
]
