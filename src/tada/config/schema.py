"""Every config key a tada run may read, with its default and type.

The schema is the single source of truth: YAML files and command-line overrides may only set keys
that appear here, with values of the declared type. Defaults follow the official base config
(and the TAda2D configs' final values) where the official system has the key; keys tada adds are marked "tada:".

A leaf is either a plain default (its type is inferred: bool, int, float, str or list) or a
:class:`Key` that states the allowed types explicitly (needed when the default is None or when a
key accepts several types).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """A schema leaf with explicit types; ``choices`` restricts string values."""

    default: Any
    types: tuple[type, ...]
    choices: tuple[str, ...] | None = None
    doc: str = ""


NONE = type(None)

SCHEMA: dict[str, Any] = {
    "TASK_TYPE": "classification",
    "NUM_GPUS": Key(8, (int,), doc="processes per node; 0 = CPU"),
    "NUM_SHARDS": 1,
    "SHARD_ID": 0,
    "DIST_BACKEND": Key("nccl", (str,), ("nccl", "gloo")),
    "PAI": False,
    "RANDOM_SEED": 0,
    "OUTPUT_DIR": "output/test",
    "OUTPUT_CFG_FILE": Key("configuration.log", (str,), doc="official key, never written there either"),
    "LOG_PERIOD": 10,
    "LOG_MODEL_INFO": True,
    "LOG_CONFIG_INFO": True,
    "USE_MULTISEG_VAL_DIST": False,
    "SUBMISSION": {"ENABLE": False},
    "VISUALIZATION": {"ENABLE": False},
    "OSS": {"ENABLE": False},
    "PRETRAIN": {"ENABLE": False},
    "LOCALIZATION": {"ENABLE": False},
    "TRAIN": {
        "ENABLE": True,
        "DATASET": "kinetics400",
        "BATCH_SIZE": Key(128, (int,), doc="global batch over all processes"),
        "LOG_FILE": "training_log.log",
        "LOSS_FUNC": Key("cross_entropy", (str,), ("cross_entropy",)),
        "EVAL_PERIOD": 5,
        "NUM_FOLDS": 1,
        "AUTO_RESUME": True,
        "CHECKPOINT_PERIOD": 5,
        "CHECKPOINT_FILE_PATH": "",
        "CHECKPOINT_ITER_PERIOD": Key(0, (int,), doc="tada: also save every K iterations (0 = off)"),
        "KEEP_LAST": Key(3, (int,), doc="tada: periodic checkpoints kept (the best is kept too)"),
        "ALLOW_CONFIG_CHANGES": Key(False, (bool,), doc="tada: auto-resume even when the config differs from the "
                                    "checkpoint's in keys a resume may not change (model, data, optimizer, ...)"),
        "INIT": Key("", (str,), ("", "in1k", "clip"), doc="'in1k' = ImageNet weights of the backbone from "
                    "TRAIN.IN1K_WEIGHTS; 'clip' = OpenAI CLIP ViT image tower from TRAIN.CLIP_WEIGHTS "
                    "(VisionTransformer)"),
        "IN1K_WEIGHTS": Key("", (str,), doc="tada: local ImageNet state-dict file: a torchvision/timm ResNet-50 "
                                           "(ResNet3D), a ConvNeXt-V1 of the model's size (ConvNeXt), or the "
                                           "2-D backbone's own state dict (a tadafied model)"),
        "CLIP_WEIGHTS": Key("", (str,), doc="tada: local OpenAI CLIP file (ViT-B-16.pt, ViT-L-14.pt: TorchScript "
                            "archive or state dict) for TRAIN.INIT clip"),
        "FINE_TUNE": True,
        "ONLY_LINEAR": False,
        "LR_REDUCE": False,
        "NUM_SAMPLES": Key(None, (int, NONE)),
        "CHECKPOINT_PRE_PROCESS": {"ENABLE": False},
        "AMP": Key("off", (str,), ("off", "bf16", "fp16"), doc="tada: mixed precision"),
        "COMPILE": Key(False, (bool,), doc="tada: torch.compile the model"),
        "CUDA_GRAPHS": Key(False, (bool,), doc="tada: replay each train step's forward+backward from one CUDA graph "
                                               "(one GPU, no compile); removes the host launch overhead"),
        "CHANNELS_LAST": Key(True, (bool,), doc="tada: channels-last 2-D compute"),
        "DETERMINISTIC": Key(False, (bool,), doc="tada: deterministic cuDNN/algorithms"),
    },
    "TEST": {
        "ENABLE": True,
        "DATASET": "kinetics400",
        "BATCH_SIZE": Key(128, (int,), doc="global batch over all processes"),
        "NUM_SPATIAL_CROPS": 1,
        "NUM_ENSEMBLE_VIEWS": 1,
        "SPATIAL_CROPS": "cc",
        "LOG_FILE": "val.log",
        "CHECKPOINT_FILE_PATH": "",
        "CHECKPOINT_TYPE": "pytorch",
        "AUTOMATIC_MULTI_SCALE_TEST": True,
        "AUTOMATIC_MULTI_SCALE_TEST_SPATIAL": False,
        "MULTI_VIEW_ENSEMBLE_VIEWS": Key(None, (int, NONE), doc="tada: clips of the automatic multi-view test "
                                         "(null: by TEST.DATASET as the official run.py: ssv2 2, else 10)"),
        "MULTI_VIEW_SPATIAL_CROPS": Key(None, (int, NONE), doc="tada: crops of the automatic multi-view test "
                                        "(null: by TEST.DATASET: kinetics or ssv2 3, else 1)"),
    },
    "DATA": {
        "DATA_ROOT_DIR": "",
        "ANNO_DIR": "",
        "FORMAT": Key("video", (str,), ("video", "frames"), doc="tada: video files or frame folders"),
        "DECODER": Key("pyav", (str,), ("pyav", "decord", "torchcodec")),
        "DECODER_THREADS": 1,
        "MAX_FAILURE_RATIO": 0.05,
        "CLASS_NAMES_FILE": "",
        "TRAIN_LIST": "",
        "VAL_LIST": "",
        "TEST_LIST": "",
        "FRAMES_DIR": "",
        "FRAME_TEMPLATE": "img_{:05d}.jpg",
        "SAMPLING_MODE": Key("interval_based", (str,), ("interval_based", "segment_based")),
        "NUM_INPUT_FRAMES": 8,
        "NUM_INPUT_CHANNELS": 3,
        "SAMPLING_RATE": 8,
        "TARGET_FPS": Key(30, (int, float)),
        "FPS": Key(30, (int, float)),
        "MINUS_INTERVAL": False,
        "TRAIN_JITTER_SCALES": [224, 340],
        "TRAIN_CROP_SIZE": 224,
        "TEST_SCALE": 256,
        "TEST_CROP_SIZE": 256,
        "MEAN": [0.45, 0.45, 0.45],
        "STD": [0.225, 0.225, 0.225],
        "MULTI_LABEL": False,
        "ENSEMBLE_METHOD": Key("sum", (str,), ("sum", "prob", "score", "max")),
    },
    "MODEL": {
        "NAME": "TAda2D",
        "EMA": {"ENABLE": False, "DECAY": 0.99996},
        "CALIBRATION_CLAMP": Key(False, (bool,),
                                 doc="tada: in eval mode clamp each TAdaConv calibration channel to the range it "
                                     "takes in training (running extremes, BN.MOMENTUM); keeps from-scratch "
                                     "TAda2D logits finite. Off: the official function (see docs/design.md)"),
    },
    "VIDEO": {
        "BACKBONE": {
            "DEPTH": Key(50, (int, list), doc="ResNet3D: 26/50/101/152; ConvNeXt: blocks per stage [d0, d1, d2, d3]; "
                         "VisionTransformer: layers"),
            "META_ARCH": Key("ResNet3D", (str,), ("ResNet3D", "ConvNeXt", "VisionTransformer")),
            "NUM_FILTERS": [64, 256, 512, 1024, 2048],
            "NUM_INPUT_CHANNELS": 3,
            "NUM_OUT_FEATURES": 2048,
            "KERNEL_SIZE": [[1, 7, 7], [1, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3]],
            "DOWNSAMPLING": [True, True, True, True, True],
            "DOWNSAMPLING_TEMPORAL": [False, False, False, False, False],
            "EXPANSION_RATIO": 4,
            "INITIALIZATION": "kaiming",
            "TADA_INIT": Key("official", (str,), ("official", "kaiming"),
                             doc="tada: TAdaConv weight init from scratch: 'official' = its construction init "
                                 "(tiny; trains as the official code does), 'kaiming' = Kaiming-normal fan-out "
                                 "like the other convs (slower to learn time at lr 0.1, see docs/design.md)"),
            "DROP_PATH": Key(0.0, (float,), doc="ConvNeXt: stochastic depth of the last block (linear from 0)"),
            "LARGE_SCALE_INIT_VALUE": Key(1e-6, (float,), doc="ConvNeXt: layer-scale (gamma) start value"),
            "STEM": {
                "NAME": "Base2DStem",
                "T_KERNEL_SIZE": Key(3, (int,), doc="ConvNeXt: temporal kernel of the patchify stem"),
                "T_STRIDE": Key(2, (int,), doc="ConvNeXt: temporal stride of the patchify stem"),
            },
            # VisionTransformer (TAdaFormer) keys
            "INPUT_RES": Key(224, (int,), doc="VisionTransformer: frame size the positional embedding is built for"),
            "PATCH_SIZE": Key(16, (int,), doc="VisionTransformer: spatial patch (tubelet) size"),
            "TUBLET_SIZE": Key(3, (int,), doc="VisionTransformer: temporal kernel of the tubelet embedding conv1"),
            "TUBLET_STRIDE": Key(2, (int,), doc="VisionTransformer: temporal stride of conv1"),
            "NUM_FEATURES": Key(768, (int,), doc="VisionTransformer: token width"),
            "NUM_HEADS": Key(12, (int,), doc="VisionTransformer: spatial attention heads"),
            "ATTN_DROPOUT": Key(0.0, (float,), doc="VisionTransformer: attention-probability dropout"),
            "REQUIRE_PROJ": Key(False, (bool,), doc="VisionTransformer: CLIP's output projection to "
                                "VIDEO.HEAD.OUTPUT_DIM before the head"),
            "ATTN_MASK_ENABLE": Key(False, (bool,), doc="official key, never read (no mask in either code)"),
            "FREEZE": Key(False, (bool,), doc="official key, never read (nothing is frozen in either code)"),
            "REDUCTION": Key(2, (int,), doc="TAdaFormer: TAda branch width = NUM_FEATURES // REDUCTION"),
            "TEMP_ENHANCE": Key(False, (bool,), doc="TAdaFormer: 3x1x1 temporal conv before the TAdaConv"),
            "DOUBLE_TADA": Key(False, (bool,), doc="TAdaFormer: a second TAda branch after attention"),
            "BRANCH": {
                "NAME": Key("TAda2DBlock", (str,),
                            ("TAda2DBlock", "Base2DBlock", "TAdaConvNeXtV2Block", "ConvNeXtBlock", "TAdaFormerBlock"),
                            doc="ConvNeXtBlock = tada: the plain per-frame ConvNeXt block"),
                "ROUTE_FUNC_K": [3, 3],
                "ROUTE_FUNC_R": 4,
                "POOL_K": [3, 1, 1],
                "HEAD_DIM": Key(48, (int,), doc="ConvNeXt: head width of the routing function's temporal attention"),
            },
            "NONLOCAL": {"ENABLE": False},
        },
        # tada: a 2-D image backbone made temporally adaptive by tada.models.tadafy (used instead of
        # VIDEO.BACKBONE, which must then keep its defaults, when BACKBONE is set)
        "TADAFY": {
            "BACKBONE": Key("", (str,), doc="tada: a registered 2-D backbone (tada.models.list_image_models()) "
                                            "or 'timm:<name>'; '' = the VIDEO.BACKBONE network"),
            "CLASSIFIER": Key("", (str,), doc="tada: the backbone's classifier module when it lacks timm's "
                                              "forward_features/forward_head (torchvision: fc, classifier)"),
            "CONVS": Key("spatial", (str,), ("spatial", "all", "none"),
                         doc="tada: which convs become TAdaConvs: kernel > 1, every conv, none (frame average)"),
            "STEM": Key(False, (bool,), doc="tada: the stem (first conv) too"),
            "INCLUDE": Key([], (list,), doc="tada: only convs whose module name matches one of these patterns"),
            "EXCLUDE": Key([], (list,), doc="tada: not the convs whose module name matches one of these patterns"),
            "ROUTE_FUNC_R": 4,
            "ROUTE_FUNC_K": [3, 3],
            "POOL_K": Key(3, (int,), doc="tada: temporal average-pool branch kernel (1 = no branch)"),
            "CAL_DIM": Key("cin", (str,), ("cin", "cout")),
        },
        "HEAD": {
            "NAME": "BaseHead",
            "ACTIVATION": "softmax",
            "DROPOUT_RATE": 0.5,
            "NUM_CLASSES": 400,
            "OUTPUT_DIM": Key(512, (int,), doc="VisionTransformer: width of the CLIP projection (REQUIRE_PROJ)"),
        },
    },
    "OPTIMIZER": {
        "OPTIM_METHOD": Key("sgd", (str,), ("sgd", "adam", "adamw")),
        "BASE_LR": 0.1,
        "ADJUST_LR": False,
        "LR_POLICY": Key("cosine", (str,), ("cosine", "cosine_v2")),
        "MAX_EPOCH": 100,
        "MOMENTUM": 0.9,
        "BETAS": [0.9, 0.999],
        "WEIGHT_DECAY": 1e-4,
        "DAMPENING": 0.0,
        "NESTEROV": True,
        "WARMUP_EPOCHS": 0.0,
        "WARMUP_START_LR": 0.01,
        "COSINE_END_LR": 0.0,
        "COSINE_AFTER_WARMUP": False,
        "CLIP_GRAD_NORM": Key(0.0, (float,),
                              doc="largest global gradient norm per step; 0 = off, as officially"),
        "BIAS_DOUBLE": False,
        "LAYER_WISE_LR_DECAY": 1.0,
        # The TAdaConvV2 recipes' multipliers; read only when LAYER_WISE_LR_DECAY < 1 (as officially).
        "HEAD_LRMULT": Key(1.0, (float,), doc="lr multiplier of parameters named 'head' (layer-wise decay only)"),
        "NEW_PARAMS": Key([], (list,), doc="name substrings of new parameters (layer-wise decay only)"),
        "NEW_PARAMS_MULT": Key(1.0, (float,), doc="lr multiplier of NEW_PARAMS (layer-wise decay only)"),
        "NEW_PARAMS_WD_MULT": Key(1.0, (float,), doc="official key, never read there either"),
    },
    "BN": {
        "EPS": 1e-5,
        "MOMENTUM": 0.1,
        "WEIGHT_DECAY": 0.0,
        "WB_LOCK": False,
        "FREEZE": False,
        "SYNC": False,
    },
    "DATA_LOADER": {
        "NUM_WORKERS": 8,
        "PIN_MEMORY": False,
        "COLLATE_FN": Key(None, (str, NONE)),
        "PERSISTENT_WORKERS": True,
        "PREFETCH_FACTOR": 2,
    },
    "AUGMENTATION": {
        "USE_GPU": False,
        "COLOR_AUG": False,
        "COLOR_P": 0.0,
        "BRIGHTNESS": 0.5,
        "CONTRAST": 0.5,
        "SATURATION": 0.5,
        "HUE": 0.25,
        "GRAYSCALE": 0.3,
        "CONSISTENT": True,
        "SHUFFLE": True,
        "GRAY_FIRST": True,
        "RATIO": [0.857142857142857, 1.1666666666666667],
        "HFLIP": Key(True, (bool,), doc="tada: random horizontal flip in training"),
        "IS_SPLIT": Key(False, (bool,), doc="official key, never read"),
        "SSV2_FLIP": False,
        "LABEL_SMOOTHING": 0.0,
        "MIXUP": {"ENABLE": False, "ALPHA": 0.0, "PROB": 1.0, "MODE": "batch", "SWITCH_PROB": 0.5},
        "CUTMIX": {"ENABLE": False, "ALPHA": 0.0, "MINMAX": Key(None, (list, NONE))},
        "RANDOM_ERASING": {"ENABLE": False, "PROB": 0.25, "MODE": "const", "COUNT": [1, 1],
                           "NUM_SPLITS": 0, "AREA_RANGE": [0.02, 0.33], "MIN_ASPECT": 0.3},
        "AUTOAUGMENT": {"ENABLE": False, "BEFORE_CROP": True, "TYPE": "rand-m9-n4-mstd0.5-inc1"},
    },
}

@dataclass(frozen=True)
class Range:
    """The numbers a key accepts: ``low <= value <= high`` (``low < value`` when ``low_open``), or one of
    ``values``. For a list key, every element. None (where a key allows it) is not a number: unchecked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    values: tuple[int, ...] | None = None

    def describe(self) -> str:
        if self.values is not None:
            return "one of " + ", ".join(map(str, self.values))
        low = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low}"
        high = "" if self.high is None else f"<= {self.high}"
        return " and ".join(part for part in (low, high) if part)

    def contains(self, value: Any) -> bool:
        if value != value:  # NaN
            return False
        if self.values is not None:
            return value in self.values
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


MAX_IMAGE_SIDE = 4096  # pixels: the largest resize/crop size a config may ask for (sizes beyond it only exhaust memory)
_SIDE = Range(1, MAX_IMAGE_SIDE)
_COUNT = Range(1)  # a count of at least one
_NON_NEGATIVE = Range(0)
_FRACTION = Range(0, 1)

# Checked at load, naming the key: values outside these ranges would crash a run late (a batch of 0,
# a crop of 0 px) or silently change its meaning (a sampling rate of 0 or below).
RANGES: dict[str, Range] = {
    "NUM_GPUS": _NON_NEGATIVE,
    "NUM_SHARDS": _COUNT,
    "SHARD_ID": _NON_NEGATIVE,
    "LOG_PERIOD": _COUNT,
    "TRAIN.BATCH_SIZE": _COUNT,
    "TRAIN.EVAL_PERIOD": _NON_NEGATIVE,
    "TRAIN.CHECKPOINT_PERIOD": _NON_NEGATIVE,
    "TRAIN.CHECKPOINT_ITER_PERIOD": _NON_NEGATIVE,
    "TRAIN.KEEP_LAST": _NON_NEGATIVE,
    "TEST.BATCH_SIZE": _COUNT,
    "TEST.NUM_ENSEMBLE_VIEWS": _COUNT,
    "TEST.NUM_SPATIAL_CROPS": Range(values=(1, 3)),
    "TEST.MULTI_VIEW_ENSEMBLE_VIEWS": _COUNT,
    "TEST.MULTI_VIEW_SPATIAL_CROPS": Range(values=(1, 3)),
    "DATA.DECODER_THREADS": _COUNT,
    "DATA.MAX_FAILURE_RATIO": _FRACTION,
    "DATA.NUM_INPUT_FRAMES": _COUNT,
    "DATA.NUM_INPUT_CHANNELS": _COUNT,
    "DATA.SAMPLING_RATE": _COUNT,
    "DATA.TARGET_FPS": Range(0, low_open=True),
    "DATA.FPS": Range(0, low_open=True),
    "DATA.TRAIN_JITTER_SCALES": Range(0, MAX_IMAGE_SIDE, low_open=True),  # sides, or area fractions <= 1
    "DATA.TRAIN_CROP_SIZE": _SIDE,
    "DATA.TEST_SCALE": _SIDE,
    "DATA.TEST_CROP_SIZE": _SIDE,
    "DATA.STD": Range(0, low_open=True),
    "VIDEO.HEAD.NUM_CLASSES": _COUNT,
    "VIDEO.HEAD.DROPOUT_RATE": _FRACTION,
    "OPTIMIZER.BASE_LR": _NON_NEGATIVE,
    "OPTIMIZER.MAX_EPOCH": _COUNT,
    "OPTIMIZER.MOMENTUM": _NON_NEGATIVE,
    "OPTIMIZER.WEIGHT_DECAY": _NON_NEGATIVE,
    "OPTIMIZER.WARMUP_EPOCHS": _NON_NEGATIVE,
    "OPTIMIZER.CLIP_GRAD_NORM": _NON_NEGATIVE,
    "OPTIMIZER.WARMUP_START_LR": _NON_NEGATIVE,
    "OPTIMIZER.COSINE_END_LR": _NON_NEGATIVE,
    "BN.EPS": Range(0, low_open=True),
    "BN.MOMENTUM": _FRACTION,
    "DATA_LOADER.NUM_WORKERS": _NON_NEGATIVE,
    "DATA_LOADER.PREFETCH_FACTOR": _COUNT,
    "AUGMENTATION.LABEL_SMOOTHING": _FRACTION,
}


# Official keys a config may carry that tada does not implement, with the only value it honours.
# Any other value is an error naming the key (``unimplemented_settings``), never silently ignored.
# Sub-keys that only matter when their ENABLE is on (MIXUP.ALPHA, ...) are not listed.
NOT_IMPLEMENTED: dict[str, Any] = {
    "TASK_TYPE": "classification",
    "USE_MULTISEG_VAL_DIST": False,
    "PRETRAIN.ENABLE": False,
    "LOCALIZATION.ENABLE": False,
    "TRAIN.NUM_SAMPLES": None,
    "TEST.CHECKPOINT_TYPE": "pytorch",
    "TEST.AUTOMATIC_MULTI_SCALE_TEST_SPATIAL": False,
    "DATA.MULTI_LABEL": False,
    "DATA_LOADER.COLLATE_FN": None,
    "VIDEO.HEAD.NAME": "BaseHead",
    "VIDEO.HEAD.ACTIVATION": "softmax",
    "BN.WB_LOCK": False,
    "BN.FREEZE": False,
    # COLOR_AUG is random grayscale only: the brightness/contrast/saturation/hue group runs with
    # probability COLOR_P, 0 in every official config.
    "AUGMENTATION.COLOR_P": 0.0,
}


# The keys a test or a prediction reads (training reads them all).
TEST_KEY_PREFIXES = ("TASK_TYPE", "TEST.", "DATA.", "DATA_LOADER.", "VIDEO.", "BN.")


def require_implemented(cfg: Any, prefixes: tuple[str, ...], error: type[Exception],
                        what: str = "not supported by the tada engine") -> None:
    """Raise ``error`` naming every NOT_IMPLEMENTED key under ``prefixes`` set to another value."""
    unsupported = unimplemented_settings(cfg, prefixes)
    if unsupported:
        raise error(f"{what}: {'; '.join(unsupported)}")


def unimplemented_settings(cfg: Any, prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """``"KEY=value (tada supports only default)"`` for each NOT_IMPLEMENTED key (under ``prefixes``) set otherwise."""
    found = []
    for key, default in NOT_IMPLEMENTED.items():
        if key.startswith(prefixes):
            value = cfg.get(key)
            if value != default:
                found.append(f"{key}={value!r} (tada supports only {default!r})")
    return found


def multi_view_protocol(cfg: Any) -> tuple[int, int]:
    """(clips, crops) of the automatic multi-view test: TEST.MULTI_VIEW_* where set, else what the
    official run.py hard-codes by TEST.DATASET: kinetics 10x3, ssv2 2x3, others 10x1."""
    name = str(cfg.TEST.DATASET).lower()
    default = (2, 3) if "ssv2" in name else (10, 3) if "kinetics" in name else (10, 1)
    views, crops = cfg.TEST.MULTI_VIEW_ENSEMBLE_VIEWS, cfg.TEST.MULTI_VIEW_SPATIAL_CROPS
    return (default[0] if views is None else int(views), default[1] if crops is None else int(crops))
