"""Contiguous mini-batches: shapes, one-character shift, per-stream continuity, clear errors."""

from __future__ import annotations

import pytest
import torch

from model.batches import BatchPlan


def plan(n: int = 1000, n_seqs: int = 4, n_steps: int = 10, seed: int = 0) -> BatchPlan:
    return BatchPlan(torch.arange(n), n_seqs, n_steps, seed=seed)


def test_shapes_and_dtype():
    p = plan()
    x, y = p.batch(0, 0)
    assert x.shape == y.shape == (4, 10)
    assert x.dtype == torch.int64
    assert p.batches_per_epoch() >= 20


def test_targets_are_inputs_shifted_by_one():
    p = plan()
    for epoch in range(3):
        for i in range(p.batches_per_epoch()):
            x, y = p.batch(epoch, i)
            # data is arange, so the character after x is x + 1
            assert torch.equal(y, x + 1)


def test_consecutive_batches_continue_each_stream():
    p = plan()
    for epoch in range(3):
        prev = None
        for i in range(p.batches_per_epoch()):
            x, _ = p.batch(epoch, i)
            assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 9, dtype=torch.long))
            if prev is not None:
                # row r of this batch starts right where row r of the previous one ended
                assert torch.equal(x[:, 0], prev[:, -1] + 1)
            prev = x


def test_streams_do_not_overlap_and_stay_inside_the_text():
    p = plan()
    for epoch in range(5):
        seen = torch.cat([torch.cat(p.batch(epoch, i)).flatten() for i in range(p.batches_per_epoch())])
        assert seen.min() >= 0 and seen.max() < 1000
        xs = torch.cat([p.batch(epoch, i)[0].flatten() for i in range(p.batches_per_epoch())])
        assert len(torch.unique(xs)) == len(xs)


def test_epochs_start_at_seeded_offsets():
    offsets = [plan(seed=7).offset(e) for e in range(20)]
    assert offsets[0] == 0
    assert all(0 <= o < 10 for o in offsets)
    assert len(set(offsets)) > 1  # the window boundaries move between epochs
    assert offsets == [plan(seed=7).offset(e) for e in range(20)]  # and a resumed run gets the same ones
    assert offsets != [plan(seed=8).offset(e) for e in range(20)]


def test_smallest_text_that_fits():
    p = BatchPlan(torch.arange(50), 4, 10)
    assert p.batches_per_epoch() == 1
    x, y = p.batch(0, 0)
    assert torch.equal(y, x + 1)


def test_too_short_text_gives_a_clear_error():
    with pytest.raises(ValueError, match=r"text too short.*4 sequences x 10 steps: 49 characters, need at least 50"):
        BatchPlan(torch.arange(49), 4, 10)


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        BatchPlan(torch.arange(100), 0, 10)
    with pytest.raises(ValueError, match="at least 1"):
        BatchPlan(torch.arange(100), 4, 0)
