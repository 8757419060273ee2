"""Config loading: inheritance, precedence, path resolution, overrides, strictness, zoo values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tada.config import ConfigError, load_config, parse_overrides, save_config

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "configs" / "projects" / "tada"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    write(tmp_path / "pool" / "model.yaml",
          "VIDEO:\n  HEAD:\n    NUM_CLASSES: 10\n    DROPOUT_RATE: 0.1\nTRAIN:\n  BATCH_SIZE: 1\n")
    write(tmp_path / "pool" / "run.yaml", "TRAIN:\n  BATCH_SIZE: 2\n  EVAL_PERIOD: 7\nOPTIMIZER:\n  BASE_LR: 0.5\n")
    write(
        tmp_path / "proj" / "parent.yaml",
        "_BASE_RUN: ../pool/run.yaml\n_BASE_MODEL: ../pool/model.yaml\nOPTIMIZER:\n  BASE_LR: 0.25\n",
    )
    write(tmp_path / "proj" / "sub" / "child.yaml", "_BASE: ../parent.yaml\nDATA:\n  NUM_INPUT_FRAMES: 4\n")
    return tmp_path


def test_precedence_schema_model_run_file_child(tree: Path) -> None:
    cfg = load_config(tree / "proj" / "sub" / "child.yaml")
    assert cfg.VIDEO.HEAD.NUM_CLASSES == 10  # model file over schema default (400)
    assert cfg.VIDEO.HEAD.DROPOUT_RATE == 0.1
    assert cfg.TRAIN.BATCH_SIZE == 2  # run file over model file
    assert cfg.TRAIN.EVAL_PERIOD == 7
    assert cfg.OPTIMIZER.BASE_LR == 0.25  # project file over run file
    assert cfg.DATA.NUM_INPUT_FRAMES == 4  # child over everything
    assert cfg.DATA.TEST_SCALE == 256  # untouched: schema default


def test_lists_are_replaced_not_merged(tree: Path) -> None:
    write(tree / "proj" / "lists.yaml", "_BASE: parent.yaml\nDATA:\n  MEAN: [0.5]\n")
    assert load_config(tree / "proj" / "lists.yaml").DATA.MEAN == [0.5]


def test_paths_resolve_against_the_naming_file_from_any_cwd(tree: Path, tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    cfg = load_config(os.path.relpath(tree / "proj" / "sub" / "child.yaml", elsewhere))
    assert cfg.TRAIN.BATCH_SIZE == 2


def test_zoo_config_loads_from_another_directory(tmp_path: Path) -> None:
    code = (
        "from tada.config import load_config;"
        f"c = load_config({str(ZOO / 'k400' / 'tada2d_8x8.yaml')!r});"
        "print(c.OPTIMIZER.BASE_LR, c.VIDEO.BACKBONE.BRANCH.NAME)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0.24", "TAda2DBlock"]


def test_overrides_are_typed_in_both_styles(tree: Path) -> None:
    cfg = load_config(
        tree / "proj" / "parent.yaml",
        overrides=["TRAIN.BATCH_SIZE", "32", "OPTIMIZER.BASE_LR=1e-3", "DATA.MEAN", "[0.1, 0.2, 0.3]",
                   "TRAIN.AUTO_RESUME=false", "BN.SYNC", "true", "OUTPUT_DIR", "out/x"],
    )
    assert cfg.TRAIN.BATCH_SIZE == 32 and isinstance(cfg.TRAIN.BATCH_SIZE, int)
    assert cfg.OPTIMIZER.BASE_LR == pytest.approx(1e-3) and isinstance(cfg.OPTIMIZER.BASE_LR, float)
    assert cfg.DATA.MEAN == [0.1, 0.2, 0.3]
    assert cfg.TRAIN.AUTO_RESUME is False
    assert cfg.BN.SYNC is True  # a key only the schema defines is overridable (officially it is not)
    assert cfg.OUTPUT_DIR == "out/x"


def test_overrides_work_when_the_top_file_has_no_base(tmp_path: Path) -> None:
    path = write(tmp_path / "flat.yaml", "TRAIN:\n  BATCH_SIZE: 4\n")
    assert load_config(path, ["TRAIN.BATCH_SIZE", "8"]).TRAIN.BATCH_SIZE == 8


def test_scientific_floats_and_ints_for_float_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "f.yaml", "OPTIMIZER:\n  WEIGHT_DECAY: 1.5e-4\n  BASE_LR: 1\n  WARMUP_START_LR: '1e3'\n")
    cfg = load_config(path)
    assert cfg.OPTIMIZER.WEIGHT_DECAY == pytest.approx(1.5e-4)
    assert cfg.OPTIMIZER.BASE_LR == 1.0 and isinstance(cfg.OPTIMIZER.BASE_LR, float)
    assert cfg.OPTIMIZER.WARMUP_START_LR == 1000.0


def test_unknown_key_in_file_names_file_line_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "TRAIN:\n  ENABLE: true\n  BATCHSIZE: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}:3" in msg and "TRAIN.BATCHSIZE" in msg and "TRAIN.BATCH_SIZE" in msg


def test_unknown_key_in_a_base_file_names_that_file(tree: Path) -> None:
    write(tree / "pool" / "run.yaml", "TRAIN:\n  BATCH_SIZE: 2\nOPTIMIZR:\n  BASE_LR: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(tree / "proj" / "sub" / "child.yaml")
    assert "run.yaml:3" in str(err.value) and "OPTIMIZER" in str(err.value)


def test_unknown_override_key_suggests_close_keys(tree: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tree / "proj" / "parent.yaml", ["TRAIN.BATCH_SIZ", "3"])
    assert "command line" in str(err.value) and "TRAIN.BATCH_SIZE" in str(err.value)


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("TRAIN:\n  BATCH_SIZE: many\n", "TRAIN.BATCH_SIZE", "int"),
        ("TRAIN:\n  AUTO_RESUME: 3\n", "TRAIN.AUTO_RESUME", "bool"),
        ("DATA:\n  MEAN: 0.4\n", "DATA.MEAN", "list"),
        ("DATA:\n  MEAN: [a, b, c]\n", "DATA.MEAN", "list of float"),
        ("TRAIN: 3\n", "TRAIN", "section"),
        ("TRAIN:\n  AMP: fp8\n", "TRAIN.AMP", "one of"),
    ],
)
def test_wrong_types_name_key_file_and_expected_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path / "t.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert key in msg and str(path) in msg and expected in msg


def test_wrong_type_override_names_key_and_type(tree: Path) -> None:
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE.*expects int"):
        load_config(tree / "proj" / "parent.yaml", ["TRAIN.BATCH_SIZE=big"])


def test_missing_base_file_and_cycles_are_clear(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_BASE: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "b.yaml", "_BASE: c.yaml\n")
    write(tmp_path / "c.yaml", "_BASE: b.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "b.yaml")


def test_override_parsing_errors() -> None:
    with pytest.raises(ConfigError, match="no value"):
        parse_overrides(["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match=r"override: the value '\[1,' is not valid YAML"):
        parse_overrides(["TRAIN.BATCH_SIZE", "[1,"])
    assert parse_overrides(["A=1", "B", "[1, 2]", "C=x=y"]) == [("A", 1), ("B", [1, 2]), ("C", "x=y")]


def test_save_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(ZOO / "ssv2" / "tada2d_16f.yaml", ["NUM_GPUS", "0"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg


def test_require_names_the_key() -> None:
    cfg = load_config(ZOO / "k400" / "tada2d_8x8.yaml")
    with pytest.raises(ConfigError, match="DATA.DATA_ROOT_DIR"):
        cfg.require("DATA.DATA_ROOT_DIR")


# ---- the four zoo configs against the official final values ------------------------------------------
DIFFERENCES = {
    # key: (8x8, 16x5, 8f, 16f)
    "TRAIN.DATASET": ("kinetics400", "kinetics400", "ssv2", "ssv2"),
    "TEST.DATASET": ("kinetics400", "kinetics400", "ssv2", "ssv2"),
    "DATA.NUM_INPUT_FRAMES": (8, 16, 8, 16),
    "DATA.SAMPLING_MODE": ("interval_based", "interval_based", "segment_based", "segment_based"),
    "DATA.SAMPLING_RATE": (8, 5, 4, 4),
    "TRAIN.BATCH_SIZE": (128, 64, 128, 64),
    "OPTIMIZER.BASE_LR": (0.24, 0.12, 0.48, 0.24),
    "OPTIMIZER.MAX_EPOCH": (100, 100, 64, 64),
    "OPTIMIZER.WARMUP_EPOCHS": (8, 8, 4, 4),
    "OPTIMIZER.WARMUP_START_LR": (0.01, 0.01, 0.0001, 0.0001),
    "VIDEO.HEAD.NUM_CLASSES": (400, 400, 174, 174),
    "AUGMENTATION.SSV2_FLIP": (False, False, True, True),
    "OUTPUT_DIR": ("output/tada2d_8x8_k400", "output/tada2d_16x5_k400", "output/tada2d_ssv2_8f",
                   "output/tada2d_ssv2_16f"),
    # tada: the automatic multi-view protocol lives in the config, not in code
    "TEST.MULTI_VIEW_ENSEMBLE_VIEWS": (10, 10, 2, 2),
    "TEST.MULTI_VIEW_SPATIAL_CROPS": (3, 3, 3, 3),
}

COMMON = {
    "TASK_TYPE": "classification", "NUM_GPUS": 8, "NUM_SHARDS": 1, "SHARD_ID": 0, "DIST_BACKEND": "nccl",
    "PAI": False, "RANDOM_SEED": 0, "LOG_PERIOD": 10, "LOG_MODEL_INFO": True, "LOG_CONFIG_INFO": True,
    "USE_MULTISEG_VAL_DIST": False, "SUBMISSION.ENABLE": False, "VISUALIZATION.ENABLE": False,
    "OSS.ENABLE": False, "PRETRAIN.ENABLE": False, "LOCALIZATION.ENABLE": False,
    "TRAIN.ENABLE": True, "TRAIN.LOG_FILE": "training_log.log", "TRAIN.LOSS_FUNC": "cross_entropy",
    "TRAIN.EVAL_PERIOD": 5, "TRAIN.NUM_FOLDS": 1, "TRAIN.AUTO_RESUME": True, "TRAIN.CHECKPOINT_PERIOD": 5,
    "TRAIN.CHECKPOINT_FILE_PATH": "", "TRAIN.INIT": "in1k", "TRAIN.FINE_TUNE": True, "TRAIN.ONLY_LINEAR": False,
    "TRAIN.LR_REDUCE": False, "TRAIN.CHECKPOINT_PRE_PROCESS.ENABLE": False,
    "TEST.ENABLE": True, "TEST.BATCH_SIZE": 128, "TEST.NUM_SPATIAL_CROPS": 1, "TEST.NUM_ENSEMBLE_VIEWS": 1,
    "TEST.LOG_FILE": "val.log", "TEST.CHECKPOINT_FILE_PATH": "", "TEST.AUTOMATIC_MULTI_SCALE_TEST": True,
    "TEST.SPATIAL_CROPS": "cc",
    "DATA.TRAIN_JITTER_SCALES": [224, 340], "DATA.TRAIN_CROP_SIZE": 224, "DATA.TEST_SCALE": 256,
    "DATA.TEST_CROP_SIZE": 256, "DATA.MEAN": [0.45] * 3, "DATA.STD": [0.225] * 3, "DATA.MULTI_LABEL": False,
    "DATA.ENSEMBLE_METHOD": "sum", "DATA.TARGET_FPS": 30, "DATA.MINUS_INTERVAL": False, "DATA.FPS": 30,
    "MODEL.NAME": "TAda2D", "MODEL.EMA.ENABLE": False,
    "VIDEO.BACKBONE.DEPTH": 50, "VIDEO.BACKBONE.META_ARCH": "ResNet3D",
    "VIDEO.BACKBONE.NUM_FILTERS": [64, 256, 512, 1024, 2048], "VIDEO.BACKBONE.NUM_INPUT_CHANNELS": 3,
    "VIDEO.BACKBONE.NUM_OUT_FEATURES": 2048,
    "VIDEO.BACKBONE.KERNEL_SIZE": [[1, 7, 7], [1, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3]],
    "VIDEO.BACKBONE.DOWNSAMPLING": [True] * 5, "VIDEO.BACKBONE.DOWNSAMPLING_TEMPORAL": [False] * 5,
    "VIDEO.BACKBONE.EXPANSION_RATIO": 4, "VIDEO.BACKBONE.INITIALIZATION": "kaiming",
    "VIDEO.BACKBONE.STEM.NAME": "Base2DStem", "VIDEO.BACKBONE.BRANCH.NAME": "TAda2DBlock",
    "VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_K": [3, 3], "VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_R": 4,
    "VIDEO.BACKBONE.BRANCH.POOL_K": [3, 1, 1], "VIDEO.BACKBONE.NONLOCAL.ENABLE": False,
    "VIDEO.HEAD.NAME": "BaseHead", "VIDEO.HEAD.ACTIVATION": "softmax", "VIDEO.HEAD.DROPOUT_RATE": 0.5,
    "OPTIMIZER.OPTIM_METHOD": "sgd", "OPTIMIZER.MOMENTUM": 0.9, "OPTIMIZER.WEIGHT_DECAY": 1e-4,
    "OPTIMIZER.DAMPENING": 0.0, "OPTIMIZER.NESTEROV": True, "OPTIMIZER.LR_POLICY": "cosine",
    "OPTIMIZER.ADJUST_LR": False, "OPTIMIZER.BIAS_DOUBLE": False, "OPTIMIZER.LAYER_WISE_LR_DECAY": 1.0,
    "BN.EPS": 1e-5, "BN.MOMENTUM": 0.1, "BN.WEIGHT_DECAY": 0.0, "BN.WB_LOCK": False, "BN.FREEZE": False,
    "BN.SYNC": False, "DATA_LOADER.NUM_WORKERS": 8, "DATA_LOADER.PIN_MEMORY": False,
    "DATA_LOADER.COLLATE_FN": None, "AUGMENTATION.USE_GPU": False, "AUGMENTATION.COLOR_AUG": False,
    "AUGMENTATION.MIXUP.ENABLE": False, "AUGMENTATION.CUTMIX.ENABLE": False,
    "AUGMENTATION.LABEL_SMOOTHING": 0.0, "AUGMENTATION.RANDOM_ERASING.ENABLE": False,
    "AUGMENTATION.AUTOAUGMENT.ENABLE": False,
    # no author paths: the user must set them (a run without them fails naming the key)
    "DATA.DATA_ROOT_DIR": "", "DATA.ANNO_DIR": "",
}

ZOO_FILES = ("k400/tada2d_8x8.yaml", "k400/tada2d_16x5.yaml", "ssv2/tada2d_8f.yaml", "ssv2/tada2d_16f.yaml")


@pytest.mark.parametrize("column, name", list(enumerate(ZOO_FILES)))
def test_zoo_configs_resolve_to_spec_values(column: int, name: str) -> None:
    cfg = load_config(ZOO / name)
    for key, values in DIFFERENCES.items():
        assert cfg.get(key) == values[column], key
    for key, value in COMMON.items():
        got = cfg.get(key)
        assert got == value and type(got) is type(value), (key, got)


def test_yaml_12_booleans_keep_off_a_string(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "amp.yaml", "TRAIN:\n  AMP: off\n  AUTO_RESUME: False\n"), ["TRAIN.AMP", "bf16"])
    assert cfg.TRAIN.AMP == "bf16" and cfg.TRAIN.AUTO_RESUME is False
    assert load_config(tmp_path / "amp.yaml").TRAIN.AMP == "off"
    assert load_config(tmp_path / "amp.yaml", ["TRAIN.AMP=off"]).TRAIN.AMP == "off"
    with pytest.raises(ConfigError, match="TRAIN.AUTO_RESUME.*expects bool"):
        load_config(tmp_path / "amp.yaml", ["TRAIN.AUTO_RESUME", "no"])


def test_multi_view_protocol_follows_the_dataset_like_the_official_run_py():
    """Configs written the official way have no TEST.MULTI_VIEW_* keys: run.py's hard-coded rule applies."""
    from tada.config.schema import multi_view_protocol
    from tada.engine.pipeline import _protocols

    unset = ["TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "null", "TEST.MULTI_VIEW_SPATIAL_CROPS", "null"]
    ssv2 = load_config(REPO / "configs/projects/tada/ssv2/tada2d_8f.yaml", unset)
    k400 = load_config(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml", unset)
    assert _protocols(ssv2) == [(1, 1), (2, 3)] and _protocols(k400) == [(1, 1), (10, 3)]
    assert multi_view_protocol(k400.with_overrides(["TEST.DATASET", "ucf101"])) == (10, 1)
    assert multi_view_protocol(ssv2.with_overrides(["TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "4"])) == (4, 3)


def test_official_style_empty_values_float_fps_and_output_cfg_file(tmp_path):
    """Official configs write `KEY:` (None) for unset values and may give a fractional fps."""
    (tmp_path / "official.yaml").write_text(
        f"_BASE: {REPO / 'configs/projects/tada/k400/tada2d_8x8.yaml'}\n"
        "OUTPUT_CFG_FILE: configuration.log\n"
        "DATA:\n  DATA_ROOT_DIR:\n  FPS: 29.97\n  TARGET_FPS: 30\n"
        "VIDEO:\n  HEAD:\n    NUM_CLASSES:\n"
    )
    cfg = load_config(tmp_path / "official.yaml")
    assert cfg.DATA.DATA_ROOT_DIR == "" and cfg.DATA.FPS == 29.97 and cfg.VIDEO.HEAD.NUM_CLASSES == 400
    (tmp_path / "child.yaml").write_text(
        f"_BASE: {REPO / 'configs/projects/tada/ssv2/tada2d_8f.yaml'}\nVIDEO:\n  HEAD:\n    NUM_CLASSES:\n")
    assert load_config(tmp_path / "child.yaml").VIDEO.HEAD.NUM_CLASSES == 174  # empty: the inherited value
    with pytest.raises(ConfigError, match="DATA.DATA_ROOT_DIR"):
        cfg.require("DATA.DATA_ROOT_DIR")


def test_official_style_base_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("_BASE: configs/projects/tada/k400/tada2d_8x8.yaml\n")
    monkeypatch.chdir(REPO)
    assert load_config(tmp_path / "sub" / "x.yaml").DATA.NUM_INPUT_FRAMES == 8
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="_BASE file not found"):
        load_config(tmp_path / "sub" / "x.yaml")


def test_packaged_configs_resolve_by_name_from_any_directory(tmp_path, monkeypatch) -> None:
    from tada.config import packaged_config_names, resolve_config_path

    monkeypatch.chdir(tmp_path)  # no configs/ here: names resolve inside the package
    names = packaged_config_names()
    assert "tada/k400/tada2d_8x8" in names and "tada/synthetic/tada2d" in names
    by_name = load_config("k400/tada2d_8x8")
    by_official_path = load_config("configs/projects/tada/k400/tada2d_8x8.yaml")
    assert by_name.dump() == by_official_path.dump()
    assert by_name.VIDEO.HEAD.NUM_CLASSES == 400
    assert resolve_config_path("synthetic/tada2d").name == "tada2d.yaml"


def test_config_names_that_match_nothing_or_several_are_errors(tmp_path, monkeypatch) -> None:
    from tada.config import resolve_config_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found: k400/nope"):
        resolve_config_path("k400/nope")
    import tada.config

    monkeypatch.setattr(tada.config, "packaged_config_names", lambda: ["a/k400/x", "b/k400/x", "b/ssv2/x"])
    with pytest.raises(ConfigError, match="ambiguous: it names a/k400/x, b/k400/x"):
        resolve_config_path("k400/x")

@pytest.mark.parametrize("key", ["AUGMENTATION.CUTMIX.MINMAX", "TRAIN.BATCH_SIZE"])
def test_alias_bombs_are_refused_before_they_expand(tmp_path: Path, key: str) -> None:
    lines = ['    - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 6):  # 10**6 strings once expanded
        lines.append(f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    *sections, leaf = key.split(".")
    indent = "  " * len(sections)
    head = "".join(f"{'  ' * d}{name}:\n" for d, name in enumerate(sections))
    text = head + f"{indent}{leaf}:\n" + "\n".join(lines) + "\n"
    assert len(text) < 1000
    path = write(tmp_path / "bomb.yaml", text)
    with pytest.raises(ConfigError, match="aliases expand") as err:
        load_config(path)
    assert str(path) in str(err.value) and len(str(err.value)) < 500
    with pytest.raises(ConfigError, match="aliases expand"):
        load_config(ZOO / "k400" / "tada2d_8x8.yaml", [key, "[" + ", ".join(line[6:] for line in lines) + "]"])


def test_small_aliases_and_merge_keys_still_load(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "DATA:\n  MEAN: &norm [0.5, 0.5, 0.5]\n  STD: *norm\n"
                 "TRAIN: &train\n  BATCH_SIZE: 4\nTEST:\n  BATCH_SIZE: 8\n")
    cfg = load_config(path)
    assert cfg.DATA.STD == [0.5, 0.5, 0.5] and cfg.TRAIN.BATCH_SIZE == 4 and cfg.TEST.BATCH_SIZE == 8


def test_recursive_aliases_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "AUGMENTATION:\n  CUTMIX:\n    MINMAX: &loop [1, *loop]\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(path)


def test_type_errors_quote_long_values_briefly(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "TRAIN:\n  BATCH_SIZE: [" + ", ".join(["123456789"] * 5000) + "]\n")
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE.*expects int") as err:
        load_config(path)
    assert len(str(err.value)) < 400


def test_non_utf8_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("TRAIN:\n  BATCH_SIZE: 4\nDATA:\n  DATA_ROOT_DIR: /data/vid\xe9os\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}:4: not UTF-8"):
        load_config(path)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffTRAIN:\n  BATCH_SIZE: 4\nDATA:\n  DATA_ROOT_DIR: /data/vidéos\n".encode("utf-8"))
    cfg = load_config(bom)
    assert cfg.TRAIN.BATCH_SIZE == 4 and cfg.DATA.DATA_ROOT_DIR == "/data/vidéos"


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("DATA.SAMPLING_RATE", "0", ">= 1"),
        ("DATA.SAMPLING_RATE", "-2", ">= 1"),
        ("TRAIN.BATCH_SIZE", "0", ">= 1"),
        ("TEST.BATCH_SIZE", "0", ">= 1"),
        ("DATA.TARGET_FPS", "0", "> 0"),
        ("DATA.TARGET_FPS", ".nan", "> 0"),
        ("DATA.TRAIN_CROP_SIZE", "0", ">= 1"),
        ("DATA_LOADER.NUM_WORKERS", "-1", ">= 0"),
        ("TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "0", ">= 1"),
        ("TEST.MULTI_VIEW_SPATIAL_CROPS", "2", "one of 1, 3"),
        ("DATA.TEST_SCALE", "100000", "<= 4096"),
        ("DATA.TRAIN_JITTER_SCALES", "[0, 320]", "every element must be > 0"),
        ("DATA.MAX_FAILURE_RATIO", "1.5", "<= 1"),
    ],
)
def test_out_of_range_values_fail_at_load_naming_the_key(tmp_path: Path, key: str, value: str,
                                                         expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"command line: key '{key}' .*{re.escape(expected)}"):
        load_config(ZOO / "k400" / "tada2d_8x8.yaml", [key, value])
    section, leaf = key.split(".")
    path = write(tmp_path / "t.yaml", f"{section}:\n  {leaf}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: key '{key}' .*{re.escape(expected)}"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["DATA.TEST_SCALE", "200"], "DATA.TEST_CROP_SIZE 256 must be <= DATA.TEST_SCALE 200"),
        (["DATA.TRAIN_JITTER_SCALES", "[340, 224]"], "needs [min, max] with min <= max"),
        (["DATA.TRAIN_CROP_SIZE", "256"], "DATA.TRAIN_CROP_SIZE 256 must be <= the smallest"),
        (["NUM_SHARDS", "2", "SHARD_ID", "2"], "SHARD_ID 2 must be < NUM_SHARDS 2"),
    ],
)
def test_inconsistent_keys_fail_at_load(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ZOO / "k400" / "tada2d_8x8.yaml", overrides)
    cfg = load_config(ZOO / "k400" / "tada2d_8x8.yaml")
    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg.with_overrides(overrides)


def test_every_shipped_config_is_in_range() -> None:
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        load_config(path)

# The run-level keys the ten official TAdaConvV2 project configs set (their merged values), which
# must all be implemented: nothing in NOT_IMPLEMENTED may refuse them.
V2_RECIPE_KEYS = {
    "TRAIN.FINE_TUNE": True, "TRAIN.LR_REDUCE": True, "TRAIN.INIT": "",
    "OPTIMIZER.OPTIM_METHOD": "adamw", "OPTIMIZER.BASE_LR": 5e-5, "OPTIMIZER.LR_POLICY": "cosine_v2",
    "OPTIMIZER.COSINE_END_LR": 1e-6, "OPTIMIZER.COSINE_AFTER_WARMUP": True, "OPTIMIZER.WEIGHT_DECAY": 0.05,
    "OPTIMIZER.LAYER_WISE_LR_DECAY": 0.7, "OPTIMIZER.HEAD_LRMULT": 10.0, "OPTIMIZER.NEW_PARAMS": ["tada"],
    "OPTIMIZER.NEW_PARAMS_MULT": 10.0, "OPTIMIZER.ADJUST_LR": False, "AUGMENTATION.LABEL_SMOOTHING": 0.1,
    "DATA.TRAIN_JITTER_SCALES": [0.08, 1.0], "AUGMENTATION.RATIO": [0.75, 1.333],
    "AUGMENTATION.AUTOAUGMENT.ENABLE": True, "AUGMENTATION.AUTOAUGMENT.BEFORE_CROP": True,
    "AUGMENTATION.AUTOAUGMENT.TYPE": "rand-m9-n4-mstd0.5-inc1", "AUGMENTATION.COLOR_AUG": True,
    "AUGMENTATION.BRIGHTNESS": 0.5, "AUGMENTATION.CONTRAST": 0.5, "AUGMENTATION.SATURATION": 0.5,
    "AUGMENTATION.HUE": 0.25, "AUGMENTATION.COLOR_P": 0.0, "AUGMENTATION.GRAYSCALE": 0.2,
    "AUGMENTATION.CONSISTENT": True, "AUGMENTATION.SHUFFLE": True, "AUGMENTATION.GRAY_FIRST": False,
    "AUGMENTATION.USE_GPU": False, "AUGMENTATION.SSV2_FLIP": True, "AUGMENTATION.MIXUP.ENABLE": False,
    "AUGMENTATION.CUTMIX.ENABLE": False, "AUGMENTATION.RANDOM_ERASING.ENABLE": False,
    "MODEL.EMA.ENABLE": False, "MODEL.EMA.DECAY": 0.99996, "BN.SYNC": False, "BN.FREEZE": False,
}


def test_the_official_v2_recipe_keys_are_all_implemented():
    from tada.config.schema import NOT_IMPLEMENTED, unimplemented_settings

    cfg = load_config(REPO / "configs/projects/tada/synthetic/tada2d.yaml", [t for k, v in V2_RECIPE_KEYS.items()
                                                                              for t in (k, v)])
    assert unimplemented_settings(cfg) == []
    for key in ("MODEL.EMA.ENABLE", "TRAIN.LR_REDUCE", "OPTIMIZER.LAYER_WISE_LR_DECAY", "AUGMENTATION.COLOR_AUG",
                "AUGMENTATION.AUTOAUGMENT.ENABLE", "AUGMENTATION.MIXUP.ENABLE", "AUGMENTATION.CUTMIX.ENABLE",
                "AUGMENTATION.RANDOM_ERASING.ENABLE"):
        assert key not in NOT_IMPLEMENTED
    # What stays refused is a setting no official config uses, e.g. the colour-jitter group.
    assert unimplemented_settings(cfg.with_overrides(["AUGMENTATION.COLOR_P", 0.5])) == [
        "AUGMENTATION.COLOR_P=0.5 (tada supports only 0.0)"]


def test_train_jitter_scales_are_sides_or_area_fractions(tmp_path) -> None:
    cfg = load_config(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml",
                      ["DATA.TRAIN_JITTER_SCALES", "[0.08, 1.0]"])  # random resized crops, as the V2 recipes
    assert cfg.DATA.TRAIN_JITTER_SCALES == [0.08, 1.0]
    with pytest.raises(ConfigError, match=r"area fractions .*need max <= 1"):
        load_config(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml", ["DATA.TRAIN_JITTER_SCALES", "[0.5, 320]"])
    with pytest.raises(ConfigError, match="TRAIN_CROP_SIZE 224 must be <= the smallest"):
        load_config(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml", ["DATA.TRAIN_JITTER_SCALES", "[200, 320]"])
