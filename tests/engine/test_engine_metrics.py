"""Top-k counting and the view aggregation (prob / score / max), exactly-once and failed videos."""

import numpy as np
import pytest
import torch

from tada.engine.metrics import VideoAggregator, aggregate_views, summarise_videos, topk_correct


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, ks=(1, 2, 5)).tolist() == [1, 2, 3]


def _add(agg, video, view, label, logits, failed=False):
    contribution = aggregate_views(torch.tensor([logits]), agg.method).numpy()
    agg.add(video_index=[video], view=[view], label=[label], path=[f"v{video}"], contribution=contribution,
            failed=[failed], error=["broken" if failed else ""])


@pytest.mark.parametrize("method", ["prob", "sum", "score", "max"])
def test_aggregation_methods(method):
    views = [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]
    agg = VideoAggregator(2, method)
    for v, logits in enumerate(views):
        _add(agg, 0, v, 1, logits)
    t = torch.tensor(views, dtype=torch.float64)
    expected = {
        "prob": t.softmax(1).sum(0), "sum": t.softmax(1).sum(0), "score": t.sum(0), "max": t.softmax(1).max(0).values,
    }[method]
    # the views go through a float32 softmax, whose last bit differs between CPUs' exp kernels
    np.testing.assert_allclose(agg.videos[0].scores, expected.numpy(), rtol=1e-6)


def test_merge_across_ranks_and_summary():
    names = ["a", "b", "c"]
    rank0, rank1 = VideoAggregator(2, "prob"), VideoAggregator(2, "prob")
    _add(rank0, 0, 0, 0, [3.0, 0.0, 0.0])
    _add(rank1, 0, 1, 0, [2.0, 0.0, 1.0])  # video 0's views split over two ranks
    _add(rank1, 1, 0, 1, [0.0, 0.0, 5.0])
    _add(rank1, 1, 1, 1, [0.0, 1.0, 5.0])
    _add(rank1, 2, 0, 2, [0.0, 0.0, 1.0], failed=True)
    _add(rank1, 2, 1, 2, [0.0, 0.0, 1.0], failed=True)
    merged = VideoAggregator(2, "prob")
    merged.merge([rank0.state(), rank1.state()])
    results, rows = summarise_videos(merged, num_videos=3, class_names=names, topk=2)
    assert results["num_videos"] == 2 and results["top1"] == 50.0 and results["top5"] == 100.0
    assert results["failed_videos"] == [{"path": "v2", "label": 2, "reason": "all 2 views: broken"}]
    assert results["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert results["per_class_accuracy"] == [100.0, 0.0, None]
    assert results["mean_class_accuracy"] == 50.0
    assert [r["top_names"] for r in rows] == [["a", "c"], ["c", "b"]]


def test_a_view_counted_twice_or_missing_is_an_error():
    agg = VideoAggregator(2, "prob")
    _add(agg, 0, 0, 0, [1.0, 0.0])
    _add(agg, 0, 0, 0, [1.0, 0.0])
    with pytest.raises(RuntimeError, match="expected each"):
        summarise_videos(agg, num_videos=1, class_names=["a", "b"])
    with pytest.raises(RuntimeError, match="saw 1 of 2 videos"):
        summarise_videos(agg, num_videos=2, class_names=["a", "b"])


def test_inconsistent_labels_are_an_error_even_for_class_0():
    agg = VideoAggregator(2, "prob")
    _add(agg, 0, 0, 0, [1.0, 0.0])
    with pytest.raises(RuntimeError, match="label"):
        _add(agg, 0, 1, 1, [1.0, 0.0])
