"""`tada train` / `tada test` / `tada predict` on real decoded videos (a tiny synthetic dataset)."""

import json

import pytest
from engine_standins import CONFIG

from tada import cli
from tada.data.synthetic import generate_dataset

TINY = [
    "NUM_GPUS", "0", "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
    "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
    "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "8", "OPTIMIZER.MAX_EPOCH", "2", "DATA_LOADER.NUM_WORKERS", "0",
    "LOG_PERIOD", "1", "TRAIN.CHANNELS_LAST", "false",
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(root, videos_per_class={"train": 2, "val": 1, "test": 1}, lengths=(16, 24),
                                sizes=(40, 56), workers=1)
    return root, manifest


def _opts(root, manifest, out):
    return [*TINY, "DATA.DATA_ROOT_DIR", str(root), "DATA.ANNO_DIR", str(root), "OUTPUT_DIR", str(out),
            "VIDEO.HEAD.NUM_CLASSES", str(len(manifest["classes"]))]


def test_train_then_test_then_predict(synthetic, tmp_path, capsys):
    root, manifest = synthetic
    opts = _opts(root, manifest, tmp_path)
    assert cli.main(["train", "--cfg", str(CONFIG), *opts]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["protocol"] == "2x3" and results["num_videos"] == 7 and results["failed_videos"] == []
    assert results["class_names"] == manifest["classes"]
    single = json.loads((tmp_path / "test_1x1" / "results.json").read_text())
    assert single["views"] == 1 and single["num_videos"] == 7
    info = json.loads((tmp_path / "train_summary.json").read_text())
    assert info["params"] > 0 and info["gmacs_train_view"] > 0  # model info logged at start

    assert cli.main(["test", "--cfg", str(CONFIG), *opts, "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false"]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["protocol"] == "1x1" and again["top1"] == single["top1"]  # deterministic test

    capsys.readouterr()
    videos = [str(root / "videos" / "test" / "grows_0000.mp4"), str(root / "videos" / "test" / "shrinks_0000.mp4")]
    ckpt = str(tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")
    code = cli.main(["predict", *videos, "--checkpoint", ckpt, "--views", "2x3", "--device", "cpu",
                     "--cfg", str(CONFIG), *opts])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("  1. ") == 2 and printed.count("  5. ") == 2
    assert any(name in printed for name in manifest["classes"])
    # default views: the config's multi-view protocol (as `tada test`), and the same scores as --views 2x3
    code = cli.main(["predict", videos[0], "--checkpoint", ckpt, "--device", "cpu", "--json",
                     "--cfg", str(CONFIG), *opts])
    default = json.loads(capsys.readouterr().out)
    assert code == 0 and default["views"] == "2x3"
    # the same score as the first video's printed rank 1 (4 decimals; another batch may round the 5th)
    first_score = float(printed.split(videos[1])[0].split("  1. ")[1].splitlines()[0].rsplit(" ", 1)[1])
    assert default["top"][0]["score"] == pytest.approx(first_score, abs=6e-5)
    # the API on the run's folder: its config, best checkpoint and class names, the same scores
    from tada import Predictor

    predictor = Predictor.from_run(tmp_path, device="cpu")
    assert predictor.checkpoint.name == "best.pyth" and predictor.class_names == manifest["classes"]
    top = predictor.predict(videos[0])
    best = str(tmp_path / "checkpoints" / "best.pyth")
    assert cli.main(["predict", videos[0], "--checkpoint", best, "--device", "cpu", "--json", "--cfg", str(CONFIG),
                     *opts]) == 0
    assert top == json.loads(capsys.readouterr().out)["top"]
    for bad, message in ((["--views", "0x3"], "views must be"), (["--topk", "0"], "--topk must be"),
                         (["--views", "2x2"], "views must be")):
        assert cli.main(["predict", videos[0], "--checkpoint", ckpt, *bad, "--cfg", str(CONFIG), *opts]) == 2
        assert message in capsys.readouterr().err


def test_predict_json_and_missing_video(synthetic, tmp_path, capsys):
    root, manifest = synthetic
    with pytest.raises(SystemExit):
        cli.main(["predict", "--cfg", str(CONFIG)])  # no video: argparse usage error
    code = cli.main(["predict", str(tmp_path / "missing.mp4"), "--checkpoint", str(tmp_path / "x.pyth"),
                     "--cfg", str(CONFIG), *_opts(root, manifest, tmp_path)])
    assert code == 2 and "video not found" in capsys.readouterr().err


@pytest.mark.slow
def test_elastic_launcher_runs_two_cpu_processes(synthetic, tmp_path):
    """What `tada train` does for NUM_GPUS > 1, here with CPU workers (gloo)."""
    from tada.engine.distributed import launch

    root, manifest = synthetic
    opts = [*_opts(root, manifest, tmp_path), "OPTIMIZER.MAX_EPOCH", "1", "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false"]
    launch(["train", "--cfg", str(CONFIG), *opts], nproc_per_node=2)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2 and results["num_videos"] == 7 and results["views"] == 1
    assert json.loads((tmp_path / "train_summary.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_tada_train_on_two_nodes_over_loopback(synthetic, tmp_path):
    """The multi-node command of docs/training.md, with two CPU "nodes" of one process on this host."""
    import os
    import socket
    import subprocess
    import sys

    from engine_standins import REPO

    root, manifest = synthetic
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = [*_opts(root, manifest, tmp_path), "OPTIMIZER.MAX_EPOCH", "1", "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    nodes = [subprocess.Popen([sys.executable, "-m", "tada", "train", "--nnodes", "2", "--node_rank", str(rank),
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "--cfg", str(CONFIG), *opts],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        errors = [node.communicate(timeout=300)[1] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert [node.returncode for node in nodes] == [0, 0], [e[-3000:] for e in errors]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["world_size"] == 2 and results["num_videos"] == 7
    assert json.loads((tmp_path / "train_summary.json").read_text())["world_size"] == 2


def test_seed_init_method_maps_to_a_static_rendezvous():
    import argparse

    from tada.cli.train import _rendezvous
    from tada.config import load_config

    cfg = load_config(CONFIG, ["NUM_SHARDS", "2", "SHARD_ID", "1"])
    args = argparse.Namespace(init_method="tcp://10.0.0.5:9999", nnodes=None, node_rank=None, master_addr=None,
                              master_port=None, rdzv_endpoint=None, rdzv_backend=None, rdzv_id=None)
    rdzv = _rendezvous(args, cfg)
    assert (rdzv["nnodes"], rdzv["node_rank"], rdzv["master_addr"], rdzv["master_port"]) == (2, 1, "10.0.0.5", 9999)


def test_predict_reports_an_undecodable_video_once(synthetic, tmp_path, capsys):
    """A broken file among good ones: its own line with the reason, exit status 1."""
    from tada.checkpoint import save_checkpoint
    from tada.config import load_config
    from tada.models import build_model

    root, manifest = synthetic
    opts = _opts(root, manifest, tmp_path)
    ckpt = save_checkpoint(tmp_path / "random.pyth", model=build_model(load_config(CONFIG, opts)), epoch=0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    good = str(root / "videos" / "test" / "grows_0000.mp4")
    capsys.readouterr()
    code = cli.main(["predict", good, str(broken), "--checkpoint", str(ckpt), "--views", "2x3", "--device", "cpu",
                     "--cfg", str(CONFIG), *opts])
    printed = capsys.readouterr().out
    assert code == 1
    assert printed.count("  1. ") == 1 and printed.count("failed: ") == 1
    assert printed.index("broken.mp4") < printed.index("failed: ")
