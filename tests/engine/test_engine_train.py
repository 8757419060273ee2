"""Training end to end on the tiny model: outputs, exact resume, NaN stop, tests, start rules."""

import json
import math

import pytest
import torch
from engine_standins import REPO, NoBNNet, dataset_fn_factory, tiny_cfg

from tada import cli
from tada.engine import EngineError, NonFiniteLossError, latest_checkpoint, run_pipeline, run_tests, train
from tada.engine.checkpointing import best_path, read_checkpoint


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_a_finished_run_leaves_its_files(finished_run):
    cfg, result = finished_run
    out = result.output_dir
    assert result.trained and result.epochs == 2 and result.train_seconds > 0
    for name in ["config.yaml", "training_log.log", "stats.jsonl", "train_summary.json", "plots/loss.png",
                 "plots/accuracy.png", "checkpoints/checkpoint_epoch_00002.pyth"]:
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    state = read_checkpoint(out / "checkpoints" / "checkpoint_epoch_00002.pyth")
    assert state["epoch"] == 1  # official meaning: index of the last completed epoch
    assert {"model_state", "optimizer_state", "cfg", "tada"} <= state.keys()
    kinds = [json.loads(line)["_type"] for line in (out / "stats.jsonl").read_text().splitlines()]
    assert kinds.count("train_epoch") == 2 and kinds.count("val_epoch") == 2 and kinds.count("train_iter") == 6
    assert best_path(out).is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["finished"] and summary["best_val"]["epochs_done"] in (1, 2)


def test_rerunning_a_finished_run_trains_nothing(finished_run):
    cfg, first = finished_run
    again = train(cfg, dataset_fn=dataset_fn_factory())
    assert not again.trained and again.train_seconds == pytest.approx(first.train_seconds)


def test_stop_and_restart_is_bit_identical(finished_run, tmp_path):
    """Interrupted after 10 of 12 steps (resuming from the iteration checkpoint at step 9)."""
    ref_cfg, ref = finished_run
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "TRAIN.CHECKPOINT_ITER_PERIOD", "3")
    train(cfg, dataset_fn=dataset_fn_factory(), stop_after_steps=10)
    assert latest_checkpoint(tmp_path).path.name == "checkpoint_epoch_00001_iter_000003.pyth"
    resumed = train(cfg, dataset_fn=dataset_fn_factory())
    assert "auto-resume" in resumed.start
    a = read_checkpoint(ref.last_checkpoint)
    b = read_checkpoint(resumed.last_checkpoint)
    assert_same_state(a["model_state"], b["model_state"])
    for sa, sb in zip(a["optimizer_state"]["state"].values(), b["optimizer_state"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    lines = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    steps = [x["global_step"] for x in lines if x["_type"] == "train_iter"]
    assert steps == sorted(set(steps))  # the killed run's lines past the checkpoint were dropped


class _NaNAfter(torch.nn.Module):
    """The tiny model, whose training forward returns NaN from call ``n`` on."""

    def __init__(self, cfg, n):
        super().__init__()
        self.net = NoBNNet(cfg)
        self.n, self.calls = n, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.training and self.calls >= self.n else out


def test_nan_loss_stops_with_epoch_and_iteration_and_spares_checkpoints(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "LOG_PERIOD", "100", "TRAIN.CHECKPOINT_ITER_PERIOD", "3")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 2/6 \(global step 8\)"):
        train(cfg, dataset_fn=dataset_fn_factory(), model_fn=lambda c: _NaNAfter(c, 8))
    latest = latest_checkpoint(tmp_path)
    assert latest.path.name == "checkpoint_epoch_00001.pyth"  # the save at step 9 never happened
    state = read_checkpoint(latest.path)["model_state"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


class _NaNGradient(torch.autograd.Function):
    """Adds nothing to the loss, but sends a NaN gradient to its input."""

    @staticmethod
    def forward(ctx, x):
        return torch.zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full((1,), float("nan"))


class _NaNWeightsAt(NoBNNet):
    """Finite losses throughout; the step ``n`` (the last of epoch 1) makes one weight NaN."""

    def __init__(self, cfg, n):
        super().__init__(cfg)
        self.trap = torch.nn.Parameter(torch.zeros(1))
        self.n, self.calls = n, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                return out + _NaNGradient.apply(self.trap)
        return out


def test_non_finite_weights_are_never_saved(tmp_path):
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "1")
    with pytest.raises(NonFiniteLossError,
                       match=r"weights became NaN/inf by the end of epoch 1 \(trap\).*nothing was saved"):
        train(cfg, dataset_fn=dataset_fn_factory(), model_fn=lambda c: _NaNWeightsAt(c, 6))
    assert latest_checkpoint(tmp_path) is None


def test_pipeline_tests_single_and_multi_view_and_lists_failed_videos(tmp_path):
    cfg = tiny_cfg(tmp_path, "OPTIMIZER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0")
    results = run_pipeline(cfg, dataset_fn=dataset_fn_factory(num_test=6, fail=(2,)), model_fn=NoBNNet)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["protocol"] == "2x3" and results["views"] == 6 and results["aggregation"] == "prob"
    for protocol, views in (("1x1", 1), ("2x3", 6)):
        folder = tmp_path / f"test_{protocol}"
        saved = json.loads((folder / "results.json").read_text())
        assert saved["views"] == views and saved["num_videos"] == 5 and saved["num_videos_total"] == 6
        assert [f["path"] for f in saved["failed_videos"]] == ["video_002.mp4"]
        assert sum(map(sum, saved["confusion_matrix"])) == 5
        assert 0 <= saved["top1"] <= saved["top5"] <= 100 and saved["train_seconds"] > 0
        assert saved["checkpoint_choice"].startswith("the last checkpoint in OUTPUT_DIR")
        lines = (folder / "predictions.csv").read_text().splitlines()
        assert len(lines) == 6 and lines[0].startswith("path,label,label_name,correct,top1_id")
        assert (folder / "confusion.png").stat().st_size > 1000
    # Re-running the finished run: no training, the tests are reused (same checkpoint file).
    before = (tmp_path / "test_2x3" / "results.json").stat().st_mtime_ns
    run_pipeline(cfg, dataset_fn=dataset_fn_factory(num_test=6, fail=(2,)), model_fn=NoBNNet)
    assert (tmp_path / "test_2x3" / "results.json").stat().st_mtime_ns == before
    # ... but not when a test setting changed: the results would describe another protocol
    changed = tiny_cfg(tmp_path, "OPTIMIZER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0", "DATA.ENSEMBLE_METHOD", "max")
    again = run_pipeline(changed, dataset_fn=dataset_fn_factory(num_test=6, fail=(2,)), model_fn=NoBNNet)
    assert again["aggregation"] == "max" and (tmp_path / "test_2x3" / "results.json").stat().st_mtime_ns != before


def test_score_and_max_aggregation_are_recorded(tmp_path, finished_run):
    _, ref = finished_run
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(ref.last_checkpoint), "DATA.ENSEMBLE_METHOD", "max",
                   "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false")
    results = run_tests(cfg, dataset_fn=dataset_fn_factory(num_test=4))
    assert results["aggregation"] == "max" and results["protocol"] == "1x1"
    assert results["checkpoint_choice"] == "TEST.CHECKPOINT_FILE_PATH"


def test_videos_with_non_finite_logits_count_as_wrong(tmp_path):
    """NaN logits would rank as class 0 and could count as correct; the video counts as wrong."""

    class SometimesNaN(NoBNNet):
        def forward(self, x):
            logits = super().forward(x)
            return torch.where(x.flatten(1)[:, :1] > 0, torch.full_like(logits, float("nan")), logits)

    torch.save(SometimesNaN(tiny_cfg(tmp_path)).state_dict(), tmp_path / "nan.pth")
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(tmp_path / "nan.pth"),
                   "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false")
    dataset = dataset_fn_factory(num_test=8)(cfg, "test")
    expect_nan = {dataset[i]["path"] for i in range(len(dataset)) if dataset[i]["video"].flatten()[0] > 0}
    assert 0 < len(expect_nan) < 8
    results = run_tests(cfg, dataset_fn=dataset_fn_factory(num_test=8), model_fn=SometimesNaN)
    assert {v["path"] for v in results["nonfinite_videos"]} == expect_nan and results["failed_videos"] == []
    assert results["num_videos"] == 8
    rows = (tmp_path / "test_1x1" / "predictions.csv").read_text().splitlines()[1:]
    assert "nan" not in "".join(rows).lower()
    wrong = [r for r in rows if r.split(",")[0] in expect_nan]
    assert len(wrong) == len(expect_nan) and all(r.split(",")[3] == "0" for r in wrong)
    assert results["top1"] <= 100.0 * (8 - len(expect_nan)) / 8
    assert sum(map(sum, results["confusion_matrix"])) == 8 - len(expect_nan)


def test_testing_without_a_checkpoint_is_an_error(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(EngineError, match="no checkpoint to test"):
        run_tests(cfg, dataset_fn=dataset_fn_factory())


def test_a_fresh_run_refuses_an_output_dir_with_another_runs_checkpoints(tmp_path):
    """AUTO_RESUME false in a used OUTPUT_DIR: the old epochs would outrank (and prune) the new ones."""
    first = train(tiny_cfg(tmp_path, "TEST.ENABLE", "false"), dataset_fn=dataset_fn_factory())
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()}
    config_before = (tmp_path / "config.yaml").read_text()
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "TRAIN.AUTO_RESUME", "false", "OPTIMIZER.BASE_LR", "0.01")
    with pytest.raises(EngineError, match=r"already holds \d checkpoint.*checkpoint_epoch_00002.pyth.*new OUTPUT_DIR"):
        train(cfg, dataset_fn=dataset_fn_factory())
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()} == before
    assert (tmp_path / "config.yaml").read_text() == config_before and first.trained


def test_a_resume_that_does_not_fit_names_the_checkpoint_and_keeps_the_config(finished_run, tmp_path, caplog):
    import shutil

    _, ref = finished_run
    shutil.copytree(ref.output_dir / "checkpoints", tmp_path / "checkpoints")
    (tmp_path / "config.yaml").write_text("the earlier run's config\n")
    wider = ["TEST.ENABLE", "false", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 256]",
             "VIDEO.BACKBONE.NUM_OUT_FEATURES", "256", "OPTIMIZER.MAX_EPOCH", "3"]
    with pytest.raises(EngineError, match=r"checkpoint_epoch_00002.pyth was trained with a config that differs in 2 "
                                          r"key\(s\) a resume may not change \(VIDEO.BACKBONE.NUM_FILTERS: "):
        train(tiny_cfg(tmp_path, *wider), dataset_fn=dataset_fn_factory())
    assert (tmp_path / "config.yaml").read_text() == "the earlier run's config\n"
    with pytest.raises(EngineError, match=r"cannot resume from .*checkpoint_epoch_00002.pyth.*does not fit"):
        train(tiny_cfg(tmp_path, *wider, "TRAIN.ALLOW_CONFIG_CHANGES", "true"), dataset_fn=dataset_fn_factory())
    assert (tmp_path / "config.yaml").read_text() == "the earlier run's config\n"
    assert "NUM_FILTERS: [8, 16, 32, 64, 128] -> [8, 16, 32, 64, 256]" in caplog.text


def test_an_unreadable_newest_checkpoint_stops_the_resume_and_deletes_nothing(finished_run, tmp_path):
    import shutil

    _, ref = finished_run
    shutil.copytree(ref.output_dir / "checkpoints", tmp_path / "checkpoints")
    newest = tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith("."))
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "3")
    with pytest.raises(EngineError, match=r"newest checkpoint is unreadable.*move checkpoint_epoch_00002.pyth away"):
        train(cfg, dataset_fn=dataset_fn_factory())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith(".")) == names


def test_continuing_from_a_mid_epoch_file_is_refused(tmp_path):
    first = tmp_path / "first"
    train(tiny_cfg(first, "TEST.ENABLE", "false", "TRAIN.CHECKPOINT_ITER_PERIOD", "3"),
          dataset_fn=dataset_fn_factory(), stop_after_steps=4)
    mid = latest_checkpoint(first).path
    assert "_iter_" in mid.name
    cfg = tiny_cfg(tmp_path / "second", "TEST.ENABLE", "false", "TRAIN.CHECKPOINT_FILE_PATH", str(mid),
                   "TRAIN.FINE_TUNE", "false")
    with pytest.raises(EngineError, match=r"written mid-epoch \(epoch 1, iteration 3\).*twice"):
        train(cfg, dataset_fn=dataset_fn_factory())


def test_official_keys_tada_does_not_implement_are_errors_not_ignored(tmp_path, finished_run):
    from tada.engine.trainer import check_train_config

    cfg = tiny_cfg(tmp_path, "LOCALIZATION.ENABLE", "true", "TRAIN.NUM_SAMPLES", "1000", "BN.WB_LOCK", "true")
    with pytest.raises(EngineError, match=r"LOCALIZATION.ENABLE=True .*TRAIN.NUM_SAMPLES=1000 .*BN.WB_LOCK=True"):
        check_train_config(cfg, world_size=1)
    _, ref = finished_run
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(ref.last_checkpoint), "DATA.MULTI_LABEL", "true")
    with pytest.raises(EngineError, match="DATA.MULTI_LABEL=True"):
        run_tests(cfg, dataset_fn=dataset_fn_factory(num_test=4))


def test_start_rules(tmp_path, finished_run):
    _, ref = finished_run
    # in1k without a weights file: the key is named.
    cfg = tiny_cfg(tmp_path / "a", "TRAIN.INIT", "in1k", "TEST.ENABLE", "false")
    with pytest.raises(Exception, match="TRAIN.IN1K_WEIGHTS"):
        train(cfg, dataset_fn=dataset_fn_factory())
    # fine-tune from a checkpoint: weights only, from epoch 1; continue: at the file's next epoch.
    cfg = tiny_cfg(tmp_path / "b", "TRAIN.CHECKPOINT_FILE_PATH", str(ref.last_checkpoint), "TEST.ENABLE", "false",
                   "OPTIMIZER.MAX_EPOCH", "3", "TRAIN.FINE_TUNE", "false")
    result = train(cfg, dataset_fn=dataset_fn_factory(), stop_after_steps=1)
    assert result.start.startswith("continue from") and "epoch 3" in result.start
    cfg = tiny_cfg(tmp_path / "c", "TRAIN.CHECKPOINT_FILE_PATH", str(ref.last_checkpoint), "TEST.ENABLE", "false")
    result = train(cfg, dataset_fn=dataset_fn_factory(), stop_after_steps=1)
    assert result.start.startswith("fine-tune from")


def test_seed_command_without_data_or_gpu_says_what_to_set(capsys):
    cfg = str(REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml")
    assert cli.main(["train", "--cfg", cfg]) == 2
    assert "DATA.DATA_ROOT_DIR is not set" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["train", "--cfg", cfg, "DATA.DATA_ROOT_DIR", "/nonexistent"]) == 2
        assert "NUM_GPUS 0" in capsys.readouterr().err
    assert cli.main(["test", "--cfg", cfg]) == 2
    assert "DATA.DATA_ROOT_DIR" in capsys.readouterr().err


def test_checkpoint_and_validation_epochs_follow_spec_2_2(tmp_path):
    """Every period, the last epoch, and every epoch of the last 11; KEEP_LAST 0 keeps them all."""
    from tada.engine.checkpointing import list_checkpoints
    from tada.engine.trainer import scheduled_epoch

    every_5 = [e for e in range(1, 101) if scheduled_epoch(e, period=5, max_epoch=100)]
    assert every_5 == [*range(5, 90, 5), *range(90, 101)]
    short = [e for e in range(1, 8) if scheduled_epoch(e, period=5, max_epoch=7)]
    assert short == [*range(1, 8)]  # short runs: every epoch

    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "14", "TRAIN.CHECKPOINT_PERIOD", "2",
                   "TRAIN.EVAL_PERIOD", "3", "TRAIN.KEEP_LAST", "0", "LOG_PERIOD", "100")
    train(cfg, dataset_fn=dataset_fn_factory(), model_fn=NoBNNet)
    saved = [c.epochs_done for c in list_checkpoints(tmp_path) if c.is_epoch_end]
    assert saved == [2, *range(3, 15)]
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["_type"] == "val_epoch"] == [*range(3, 15)]


@pytest.mark.parametrize("epoch", [None, "two", -1])
def test_an_official_file_without_a_valid_epoch_stops_auto_resume_clearly(finished_run, tmp_path, epoch):
    _, ref = finished_run
    state = read_checkpoint(ref.last_checkpoint)
    official = {"model_state": state["model_state"], "optimizer_state": state["optimizer_state"]}
    if epoch is not None:
        official["epoch"] = epoch
    (tmp_path / "checkpoints").mkdir()
    torch.save(official, tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "3")
    with pytest.raises(EngineError, match=r"cannot auto-resume from .*checkpoint_epoch_00002.pyth: it has (no 'epoch'|"
                                          r"'epoch' .*not an index).*TRAIN.FINE_TUNE true"):
        train(cfg, dataset_fn=dataset_fn_factory())
    official["epoch"] = 1  # the same file with its epoch continues at epoch 3
    torch.save(official, tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")
    result = train(cfg, dataset_fn=dataset_fn_factory(), stop_after_steps=1)
    assert "official file: epoch 2" in result.start


class _SignalOnItem(torch.utils.data.Dataset):
    """The train set; reading item number ``at`` (in call order) sends ``signum`` to this process."""

    def __init__(self, inner, *, at: int, signum: int) -> None:
        self.inner, self.at, self.signum, self.calls = inner, at, signum, 0
        self.split, self.name, self.class_names = inner.split, inner.name, inner.class_names

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        import os

        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.inner[index]


def test_a_signal_stops_after_the_step_with_an_exact_checkpoint(finished_run, tmp_path):
    """SIGTERM while batch 5 of epoch 1 loads (items 17-20 of 24): that step completes, the checkpoint
    holds iteration 5, and the same call again ends bit-identical to the uninterrupted run."""
    import signal

    from tada.engine import TrainingInterrupted

    _, ref = finished_run
    base = dataset_fn_factory()
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false")
    handler_before = signal.getsignal(signal.SIGTERM)

    def signalling(cfg, split):
        data = base(cfg, split)
        return _SignalOnItem(data, at=18, signum=signal.SIGTERM) if split == "train" else data

    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM at epoch 1, iteration 5/6; saved .*"
                                                  r"checkpoint_epoch_00000_iter_000005.pyth.*same command") as err:
        train(cfg, dataset_fn=signalling)
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler_before  # restored
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("*.pyth"))] == \
        ["checkpoint_epoch_00000_iter_000005.pyth"]
    result = train(cfg, dataset_fn=base)
    assert "epoch 1, iteration 5" in result.start
    assert_same_state(read_checkpoint(ref.last_checkpoint)["model_state"],
                      read_checkpoint(result.last_checkpoint)["model_state"])

def test_cpu_bf16_training_learns_like_float32(tmp_path):
    """TRAIN.AMP bf16 on the CPU: autocast really runs (the first loss differs from float32 in the
    bf16 rounding range), the weights stay float32, and 10 steps on one batch fit it as float32 does."""
    losses, states = {}, {}
    for amp in ("off", "bf16"):
        out = tmp_path / amp
        cfg = tiny_cfg(out, "TEST.ENABLE", "false", "TRAIN.AMP", amp, "LOG_PERIOD", "1", "OPTIMIZER.MAX_EPOCH", "10",
                       "OPTIMIZER.WARMUP_EPOCHS", "0", "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "100",
                       "VIDEO.HEAD.DROPOUT_RATE", "0.0")
        result = train(cfg, dataset_fn=dataset_fn_factory(num_train=4))
        records = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
        losses[amp] = [r["loss"] for r in records if r["_type"] == "train_iter"]
        states[amp] = read_checkpoint(result.last_checkpoint)["model_state"]
        precision = json.loads((out / "train_summary.json").read_text())["precision"]
        assert precision == ("bf16 (CPU autocast)" if amp == "bf16" else "fp32")
    fp32, bf16 = losses["off"], losses["bf16"]
    assert len(bf16) == 10 and all(math.isfinite(v) for v in bf16)
    assert bf16[0] != fp32[0] and bf16[0] == pytest.approx(fp32[0], rel=0.03)  # same weights, same batch
    for run in (fp32, bf16):
        assert sum(run[-3:]) / 3 < 0.4 * run[0], run
    assert all(v.dtype == torch.float32 for v in states["bf16"].values() if v.is_floating_point())


def _iter_records(out) -> list[dict]:
    lines = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    return [x for x in lines if x["_type"] in ("train_iter", "train_epoch")]


def test_gradient_clipping_that_never_binds_is_the_unclipped_run(finished_run, tmp_path):
    """A limit above every step's norm changes no bit; the stats then say how large the norms got."""
    _, ref = finished_run
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "OPTIMIZER.CLIP_GRAD_NORM", "1e9")
    result = train(cfg, dataset_fn=dataset_fn_factory())
    assert_same_state(read_checkpoint(ref.last_checkpoint)["model_state"],
                      read_checkpoint(result.last_checkpoint)["model_state"])
    records = _iter_records(tmp_path)
    assert all(r["clipped_steps"] == 0 and 0 < r["grad_norm_max"] < 1e9 for r in records)
    assert all("clipped_steps" not in r for r in _iter_records(ref.output_dir))


def test_gradient_clipping_bounds_every_step_and_counts_the_clipped_steps(tmp_path):
    """With weight decay off, SGD with momentum mu moves the weights by at most lr * limit / (1 - mu)
    per step when every gradient's norm is at most the limit (Nesterov included)."""
    limit = 1e-4
    cfg = tiny_cfg(tmp_path, "TEST.ENABLE", "false", "OPTIMIZER.CLIP_GRAD_NORM", str(limit),
                   "OPTIMIZER.WEIGHT_DECAY", "0.0", "TRAIN.EVAL_PERIOD", "0")
    from tada.models import build_model

    torch.manual_seed(int(cfg.RANDOM_SEED))
    start = {k: p.detach().clone() for k, p in build_model(cfg).named_parameters()}
    result = train(cfg, dataset_fn=dataset_fn_factory())
    end = read_checkpoint(result.last_checkpoint)["model_state"]
    moved = sum(float((end[k].double() - v.double()).pow(2).sum()) for k, v in start.items()) ** 0.5
    windows = [r for r in _iter_records(tmp_path) if r["_type"] == "train_iter"]
    steps = windows[-1]["global_step"]
    assert steps == 12  # 2 epochs of 6
    bound = steps * float(cfg.OPTIMIZER.BASE_LR) * limit / (1 - float(cfg.OPTIMIZER.MOMENTUM))
    assert 0 < moved <= bound * (1 + 1e-6)
    assert sum(r["clipped_steps"] for r in windows) == steps
    assert all(r["grad_norm_max"] > limit for r in windows)
    epochs = [r for r in _iter_records(tmp_path) if r["_type"] == "train_epoch"]
    assert [r["clipped_steps"] for r in epochs] == [6, 6]
