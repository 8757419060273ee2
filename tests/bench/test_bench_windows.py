"""`tada benchmark windows` runs end to end on a tiny model (the figures themselves are not asserted)."""

import json

from tada import cli

TINY = ["VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
        "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA.NUM_INPUT_FRAMES", "4", "DATA.SAMPLING_RATE", "4"]


def test_benchmark_windows_reports_rates_and_memory(tmp_path, capsys):
    code = cli.main(["benchmark", "windows", "--seconds", "2", "--size", "64x48", "--batch", "2", "--threads", "1",
                     "--workdir", str(tmp_path), "--json", *TINY])
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["windows"] == 4 and row["failed"] == 0  # 2 s of 16-frame (0.53 s) windows
    assert row["windows_per_s"] > 0 and row["model_clips_per_s"] > 0 and row["ratio"] > 0
    assert row["peak_rss_bytes"] >= row["rss_loaded_bytes"] > 0
    assert (tmp_path / "moving_64x48_2s.mp4").is_file()  # generated once, reused
