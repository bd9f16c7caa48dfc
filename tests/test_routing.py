"""harness.routing: VOLD Eq. 6's failure weights and PTD-PO's routing of failed rollouts."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.routing import failure_weights, route_failed


def test_failure_weights_are_one_minus_reward_when_masked():
    r = torch.tensor([1.0, 0.0, 0.25, 1.0])
    assert failure_weights(r).tolist() == [0.0, 1.0, 0.75, 0.0]
    assert failure_weights(r, masked=False).tolist() == [1.0] * 4
    assert failure_weights(torch.tensor([2.0, -1.0]), masked=False).tolist() == [1.0, 1.0]  # Eq. 5: no check
    for bad in ([1.5, 0.0], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            failure_weights(torch.tensor(bad))
    assert failure_weights(torch.tensor([1, 0], dtype=torch.long)).dtype == torch.float32


def test_route_failed_examples():
    acc = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    gid = torch.tensor([0, 0, 1, 1, 7, 7])
    # group means: 0.5, 0.0, 0.5
    assert route_failed(acc, gid).tolist() == [True, False, True, True, True, False]
    assert route_failed(acc, gid, tau=0.5).tolist() == [False, False, True, True, False, False]
    assert route_failed(acc, gid, tau=0.0).tolist() == [False] * 6
    assert route_failed(torch.zeros(0), torch.zeros(0, dtype=torch.long)).tolist() == []
    with pytest.raises(ValueError, match="accuracy must lie"):
        route_failed(torch.tensor([2.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        route_failed(torch.tensor([0.0, 1.0]), torch.tensor([0]))


# accuracies in {0, 1/4, ..., 1} (binary and fractional rewards), up to 6 groups of rollouts
_rows = st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0]), st.integers(0, 5)), min_size=1, max_size=24)
_tau = st.floats(min_value=-1.0, max_value=2.0, allow_nan=False)


def _tensors(rows):
    return torch.tensor([a for a, _ in rows]), torch.tensor([g for _, g in rows])


@settings(max_examples=150, deadline=None)
@given(_rows, _tau)
def test_routed_rollouts_are_failed_ones(rows, tau):
    acc, gid = _tensors(rows)
    routed = route_failed(acc, gid, tau)
    assert routed.dtype == torch.bool and routed.shape == acc.shape
    assert not (routed & (acc != 0)).any()  # routed ⊆ failed
    for i in range(len(rows)):  # the definition, row by row
        mean = acc[gid == gid[i]].double().mean()
        assert bool(routed[i]) == (bool(acc[i] == 0) and bool(mean < tau))


@settings(max_examples=100, deadline=None)
@given(_rows, st.floats(min_value=1.0, max_value=10.0), st.floats(max_value=0.0, min_value=-10.0))
def test_tau_above_one_routes_every_failure_and_tau_at_most_zero_none(rows, high, low):
    acc, gid = _tensors(rows)
    assert route_failed(acc, gid, high).tolist() == (acc == 0).tolist()
    assert not route_failed(acc, gid, low).any()


@settings(max_examples=100, deadline=None)
@given(_rows, _tau, st.randoms(use_true_random=False))
def test_permutation_and_relabelling_invariance(rows, tau, rnd):
    acc, gid = _tensors(rows)
    routed = route_failed(acc, gid, tau)
    perm = list(range(len(rows)))
    rnd.shuffle(perm)  # rows shuffled, within and across groups
    p = torch.tensor(perm)
    assert route_failed(acc[p], gid[p], tau).tolist() == routed[p].tolist()
    relabel = torch.tensor(rnd.sample(range(100), 6))  # group labels renamed
    assert route_failed(acc, relabel[gid], tau).tolist() == routed.tolist()


@settings(max_examples=50, deadline=None)
@given(_rows)
def test_failure_weights_and_routing_agree_on_binary_rewards(rows):
    acc, gid = _tensors(rows)
    binary = (acc >= 0.5).float()
    # tau > 1: every failure is routed, exactly the rollouts Eq. 6 distils
    assert route_failed(binary, gid, 1.5).float().tolist() == failure_weights(binary).tolist()
