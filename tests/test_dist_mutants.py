"""The distributed helpers (misc/engine/dist.py) in one process: the reductions, the agreement,
the gather and the device choice against a stand-in process group whose peers' values are
given, so each rank's answer is worked out by hand. Fast (no torchrun); the tests
tools/mutate.py runs against dist.py's mutants (tests/test_distributed.py runs the real gloo)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as tdist

from misc.engine import dist
from misc.errors import BadInput


class Peers:
    """A process group as seen from `rank`: the other ranks contribute `peers` (by rank) to
    every collective."""

    def __init__(self, monkeypatch, rank: int, peers: dict[int, object], backend="gloo"):
        self.rank, self.peers, self.calls = rank, peers, []
        size = len(peers) + 1
        for name, value in (("is_available", lambda: True), ("is_initialized", lambda: True),
                            ("get_rank", lambda: rank), ("get_world_size", lambda: size),
                            ("get_backend", lambda: backend), ("all_reduce", self.all_reduce),
                            ("gather_object", self.gather_object),
                            ("barrier", lambda: self.calls.append("barrier"))):
            monkeypatch.setattr(tdist, name, value)

    def all_reduce(self, work, op):
        self.calls.append(("all_reduce", op, work))
        assert work.device.type == "cpu"  # gloo reduces CPU tensors
        values = [work.clone()] + [torch.as_tensor(v, dtype=work.dtype) for v in self.peers.values()]
        if op == tdist.ReduceOp.SUM:
            work.copy_(sum(values))
        elif op == tdist.ReduceOp.MIN:
            work.copy_(torch.stack(values).min(0).values)
        else:
            raise AssertionError(f"unexpected op {op}")

    def gather_object(self, obj, out, dst):
        self.calls.append(("gather", dst))
        if self.rank == dst:
            assert out is not None and len(out) == len(self.peers) + 1
            for r, v in {**self.peers, self.rank: obj}.items():
                out[r] = v
        else:
            assert out is None


def test_outside_torchrun_the_world_is_rank_0_of_1_and_reductions_are_identities():
    assert dist.world() == (0, 1) and dist.is_main()
    x = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_mean(x) is x and dist.all_reduce_sum(x) is x
    assert dist.agree(True) is True and dist.agree(False) is False
    assert dist.gather_to_main({"a": 1}) == [{"a": 1}]
    dist.barrier()  # no group: nothing to wait for


def test_the_world_is_the_groups_rank_and_size(monkeypatch):
    Peers(monkeypatch, rank=2, peers={0: 0, 1: 0})
    assert dist.world() == (2, 3) and not dist.is_main()


def test_an_unavailable_distributed_package_is_one_process(monkeypatch):
    monkeypatch.setattr(tdist, "is_available", lambda: False)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    assert dist.world() == (0, 1)


def test_the_mean_over_ranks_divides_the_sum_by_the_number_of_ranks(monkeypatch):
    Peers(monkeypatch, rank=1, peers={0: [1.0, 10.0], 2: [4.0, -2.0]})
    x = torch.tensor([7.0, 1.0])
    assert dist.all_reduce_mean(x).tolist() == [4.0, 3.0]  # (1 + 7 + 4) / 3, (10 + 1 - 2) / 3
    assert x.tolist() == [7.0, 1.0]  # the rank's own tensor is left as it was


def test_the_sum_over_ranks_keeps_the_dtype_and_leaves_the_input_alone(monkeypatch):
    group = Peers(monkeypatch, rank=0, peers={1: [[1, 2], [3, 4]]})
    conf = torch.tensor([[10, 0], [0, 5]], dtype=torch.int64)
    total = dist.all_reduce_sum(conf)
    assert total.tolist() == [[11, 2], [3, 9]] and total.dtype == torch.int64
    assert conf.tolist() == [[10, 0], [0, 5]]
    (_, op, work), = group.calls
    assert op == tdist.ReduceOp.SUM and work is not conf


def test_ranks_agree_only_when_every_rank_is_ok(monkeypatch):
    Peers(monkeypatch, rank=0, peers={1: [1]})
    assert dist.agree(True) is True
    assert dist.agree(False) is False
    Peers(monkeypatch, rank=0, peers={1: [0]})  # the other rank hit a fault
    assert dist.agree(True) is False


def test_the_main_rank_gathers_every_ranks_object_in_rank_order(monkeypatch):
    group = Peers(monkeypatch, rank=0, peers={1: "r1", 2: "r2"})
    assert dist.gather_to_main("r0") == ["r0", "r1", "r2"]
    assert group.calls == [("gather", 0)]
    other = Peers(monkeypatch, rank=2, peers={0: "r0", 1: "r1"})
    assert dist.gather_to_main("r2") is None and other.calls == [("gather", 0)]


def test_a_barrier_is_a_collective_only_with_several_ranks(monkeypatch):
    group = Peers(monkeypatch, rank=1, peers={0: 0})
    dist.barrier()
    assert group.calls == ["barrier"]


def test_the_collective_device_is_the_current_gpu_under_nccl_and_the_cpu_under_gloo(monkeypatch):
    Peers(monkeypatch, rank=0, peers={1: 0}, backend="nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert dist.collective_device() == torch.device("cuda", 3)
    Peers(monkeypatch, rank=0, peers={1: 0}, backend="gloo")
    assert dist.collective_device() == torch.device("cpu")


def test_each_rank_shards_every_world_size_th_item_from_its_rank():
    items = list(range(10))
    assert dist.shard(items, 0, 3) == [0, 3, 6, 9]
    assert dist.shard(items, 2, 3) == [2, 5, 8]
    assert dist.shard(items) == items  # one process: everything


def test_the_shard_of_this_rank_comes_from_the_group(monkeypatch):
    Peers(monkeypatch, rank=1, peers={0: 0, 2: 0})
    assert dist.shard(list(range(7))) == [1, 4]
    assert dist.shard(list(range(7)), rank=0) == [0, 3, 6]
    assert dist.shard(list(range(7)), world_size=2) == [1, 3, 5]


def test_the_gpu_of_a_rank_is_its_local_rank_or_the_only_visible_one():
    assert dist.cuda_index("cuda", 3, 4, 4) == 3
    assert dist.cuda_index("auto", 1, 2, 2) == 1
    assert dist.cuda_index("cuda", 3, 4, 1) == 0  # one GPU shown to each process
    assert dist.cuda_index("cuda:2", 0, 1, 3) == 2  # one process, the GPU named
    assert dist.cuda_index("cuda:0", 0, 1, 1) == 0


def test_a_gpu_request_that_cannot_be_met_names_the_fix():
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES") as err:
        dist.cuda_index("cuda:1", 0, 2, 4)  # every rank would take GPU 1
    assert "--device cuda:1 under torchrun" in str(err.value) and "--device cuda " in str(err.value)
    with pytest.raises(ValueError, match="only 2 GPUs are visible"):
        dist.cuda_index("cuda:2", 0, 1, 2)
    with pytest.raises(ValueError, match=r"LOCAL_RANK 2 but only 2 GPUs.*at most 2 processes"):
        dist.cuda_index("cuda", 2, 3, 2)


def _fake_init(monkeypatch, cuda: int = 0):
    """CUDA with `cuda` GPUs (0: none), and the process group's start recorded."""
    started, registered, set_to = [], [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", set_to.append)
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(tdist, "init_process_group",
                        lambda backend, timeout: started.append((backend, timeout)))
    monkeypatch.setattr(dist.atexit, "register", registered.append)
    return started, registered, set_to


def test_one_process_on_a_cpu_machine_starts_no_group(monkeypatch):
    started, registered, set_to = _fake_init(monkeypatch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_distributed("auto") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.init_distributed("cpu") == torch.device("cpu")
    assert started == [] and registered == [] and set_to == []


def test_asking_for_cuda_without_it_is_an_error_that_names_the_fix(monkeypatch):
    _fake_init(monkeypatch)
    for request in ("cuda", "cuda:0"):
        with pytest.raises(BadInput, match="pass --device cpu"):
            dist.init_distributed(request)


def test_two_cpu_processes_start_gloo_with_the_timeout_and_tear_it_down_at_exit(monkeypatch):
    started, registered, _ = _fake_init(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.init_distributed("auto", timeout_minutes=7.5) == torch.device("cpu")
    assert started == [("gloo", timedelta(minutes=7.5))]
    assert registered == [dist._destroy]
    destroyed = []
    monkeypatch.setattr(tdist, "destroy_process_group", lambda: destroyed.append(1))
    dist._destroy()  # the group is not up (is_initialized False): nothing to destroy
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    dist._destroy()
    assert destroyed == [1]


def test_an_already_started_group_is_not_started_again(monkeypatch):
    started, registered, _ = _fake_init(monkeypatch)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.init_distributed("cpu")
    assert started == [] and registered == []


def test_gpu_ranks_take_their_local_gpu_before_nccl_starts(monkeypatch):
    started, _, set_to = _fake_init(monkeypatch, cuda=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.init_distributed("auto") == torch.device("cuda", 1)
    assert set_to == [torch.device("cuda", 1)] and started[0][0] == "nccl"
    assert started[0][1] == timedelta(minutes=dist.DEFAULT_TIMEOUT_MINUTES)
    assert dist.DEFAULT_TIMEOUT_MINUTES >= 60  # hours: the main rank evaluates alone meanwhile
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("WORLD_SIZE")
    set_to.clear()
    assert dist.init_distributed("cuda") == torch.device("cuda", 0)  # one process: GPU 0
    assert set_to == [torch.device("cuda", 0)] and len(started) == 1
    assert dist.init_distributed("cpu") == torch.device("cpu")  # CPU asked for on a GPU machine


def test_the_global_batch_is_split_into_the_ranks_consecutive_slices():
    # no shuffle: 10 items, global batch 4 over 2 ranks: batches 0-3 and 4-7 (8, 9 dropped)
    r0 = list(dist.GlobalBatchSampler(10, 4, shuffle=False, rank=0, world_size=2))
    r1 = list(dist.GlobalBatchSampler(10, 4, shuffle=False, rank=1, world_size=2))
    assert r0 == [[0, 1], [4, 5]] and r1 == [[2, 3], [6, 7]]
    assert len(dist.GlobalBatchSampler(10, 4, shuffle=False)) == 2
    assert list(dist.GlobalBatchSampler(9, 3, shuffle=False, rank=2, world_size=3)) == [
        [2], [5], [8]]


def test_shuffled_batches_over_ranks_are_the_one_process_batches(monkeypatch):
    one = dist.GlobalBatchSampler(12, 6, seed=5)
    one.set_epoch(3)
    halves = [dist.GlobalBatchSampler(12, 6, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for h in halves:
        h.set_epoch(3)
    a, b = (list(h) for h in halves)
    assert [x + y for x, y in zip(a, b)] == list(one)
    assert sorted(i for batch in one for i in batch) == list(range(12))
    assert list(one) != [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]  # shuffled
    # the sampler takes rank and size from the group when not given
    Peers(monkeypatch, rank=1, peers={0: 0})
    grouped = dist.GlobalBatchSampler(12, 6, seed=5)
    grouped.set_epoch(3)
    assert list(grouped) == b and grouped.world_size == 2


def test_each_epoch_and_seed_has_its_own_order_and_the_same_pair_the_same():
    def order(seed, epoch):
        s = dist.GlobalBatchSampler(20, 20, seed=seed)
        s.set_epoch(epoch)
        return list(s)[0]
    assert order(0, 0) == order(0, 0) and order(1, 2) == order(1, 2)
    assert len({tuple(order(s, e)) for s in (0, 1, 2) for e in (0, 1, 2)}) == 9
    assert order(0, 0) == torch.randperm(20, generator=torch.Generator().manual_seed(0)).tolist()


def test_a_batch_that_does_not_divide_or_a_list_shorter_than_it_is_refused_with_the_fix():
    with pytest.raises(BadInput, match="batch size 6 is not divisible by the 4 processes"):
        dist.GlobalBatchSampler(12, 6, rank=0, world_size=4)
    with pytest.raises(BadInput, match="has 5 images, fewer than one batch of 6; lower the batch"):
        dist.GlobalBatchSampler(5, 6)
    assert len(dist.GlobalBatchSampler(6, 6)) == 1  # exactly one batch is enough


def test_without_a_request_the_device_is_chosen_automatically(monkeypatch):
    _fake_init(monkeypatch, cuda=1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dist.init_distributed() == torch.device("cuda", 0)  # "auto": CUDA when there is one


def test_a_sampler_without_seed_or_epoch_gives_seed_0_epoch_0(monkeypatch):
    plain = dist.GlobalBatchSampler(12, 12)
    explicit = dist.GlobalBatchSampler(12, 12, seed=0)
    explicit.set_epoch(0)
    assert list(plain) == list(explicit)
    seeded = dist.GlobalBatchSampler(12, 12, seed=4)  # iterated before any set_epoch
    first = dist.GlobalBatchSampler(12, 12, seed=4)
    first.set_epoch(0)
    assert list(seeded) == list(first)
