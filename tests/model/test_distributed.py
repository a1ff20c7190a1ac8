"""Who a training process is among several (torchrun's environment), and its share of a batch."""

from __future__ import annotations

import pytest

from model.distributed import SINGLE, Ranks, ranks_from_env


def test_without_torchrun_a_process_trains_alone():
    assert ranks_from_env({}) == SINGLE and not SINGLE.distributed and SINGLE.main
    assert ranks_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == SINGLE
    assert SINGLE.rows(16) == slice(0, 16)


def test_torchrun_ranks_share_the_rows_equally():
    ranks = [ranks_from_env({"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r)}) for r in (0, 1)]
    assert [r.main for r in ranks] == [True, False]
    assert [r.rows(16) for r in ranks] == [slice(0, 8), slice(8, 16)]
    with pytest.raises(ValueError, match="multiple of 2"):
        ranks[0].rows(15)


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}])
def test_a_broken_environment_is_a_clear_error(env):
    with pytest.raises(ValueError, match="RANK|torchrun"):
        ranks_from_env(env)


def test_ranks_compare_by_value():
    assert Ranks(1, 2, 1) == ranks_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})


def test_more_processes_than_gpus_is_refused_with_what_to_do(monkeypatch):
    from model import distributed

    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.torch.cuda, "device_count", lambda: 1)
    assert distributed.device_for(Ranks(0, 2, 0), "auto") == "cuda:0"
    with pytest.raises(ValueError, match="--nproc-per-node 1, or --device cpu"):
        distributed.device_for(Ranks(1, 2, 1), "cuda")
    assert distributed.device_for(Ranks(1, 2, 1), "cpu") == "cpu"
    assert distributed.device_for(SINGLE, "auto") == "auto"
