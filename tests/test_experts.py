"""Timestep experts: half-open ranges, per-sample routing, the routed guide."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppap.experts import ModuleExperts, RoutedGuide, SingleGuide, check_ranges, expert_for_timestep, timestep_ranges

pytestmark = pytest.mark.usefixtures("one_thread")


class ConstantExpert(nn.Module):
    """Logits = a constant row `value` (plus 0 * x so the output depends on x for autograd)."""

    def __init__(self, value: float, num_classes: int = 3):
        super().__init__()
        self.value, self.num_classes = value, num_classes
        self.calls = []

    def forward(self, x, t):
        self.calls.append(t.clone())
        return torch.full((x.shape[0], self.num_classes), self.value) + 0 * x.flatten(1)[:, :1]


class LinearExpert(nn.Module):
    """Logits = W x with a seeded W of its own: distinct experts, distinct gradients."""

    def __init__(self, seed: int, in_features: int = 12, num_classes: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn((num_classes, in_features), generator=torch.Generator().manual_seed(seed)))

    def forward(self, x, t):
        return x.flatten(1) @ self.weight.T


# ------------------------------------------------------------------------------------ ranges ----

def test_timestep_ranges_even_split_half_open():
    ranges = timestep_ranges(1000, 5)
    assert ranges == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    owners = expert_for_timestep(torch.tensor([0, 199, 200, 399, 400, 799, 800, 999]), ranges)
    assert owners.tolist() == [0, 0, 1, 1, 2, 3, 4, 4]


def test_timestep_ranges_uneven_split():
    ranges = timestep_ranges(1000, 3)
    check_ranges(ranges, 1000)
    lengths = [end - start for start, end in ranges]
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == 1000
    start1, start2 = ranges[1][0], ranges[2][0]
    t = torch.tensor([0, start1 - 1, start1, start2 - 1, start2, 999])
    assert expert_for_timestep(t, ranges).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("T, n", [(1000, 1), (1000, 5), (1000, 3), (1000, 7), (10, 10), (13, 4)])
def test_every_timestep_has_exactly_one_owner(T, n):
    ranges = timestep_ranges(T, n)
    check_ranges(ranges, T)
    t = torch.arange(T)
    owners = expert_for_timestep(t, ranges)
    expected = [next(i for i, (a, b) in enumerate(ranges) if a <= s < b) for s in range(T)]
    assert owners.tolist() == expected
    assert torch.bincount(owners, minlength=n).tolist() == [b - a for a, b in ranges]


def test_expert_for_timestep_per_sample_in_a_mixed_batch():
    ranges = timestep_ranges(1000, 5)
    t = torch.tensor([999, 0, 200, 199, 650, 401])
    assert expert_for_timestep(t, ranges).tolist() == [4, 0, 1, 0, 3, 2]


@pytest.mark.parametrize("bad", [-1, 1000, 5000])
def test_out_of_range_timestep_raises_clearly(bad):
    ranges = timestep_ranges(1000, 5)
    with pytest.raises(ValueError, match=rf"{bad}.*outside \[0, 1000\)"):
        expert_for_timestep(torch.tensor([10, bad, 20]), ranges)


@pytest.mark.parametrize("n", [0, -2, 11])
def test_timestep_ranges_rejects_bad_counts(n):
    with pytest.raises(ValueError):
        timestep_ranges(10, n)


@pytest.mark.parametrize("ranges, message", [
    ([(0, 10), (11, 20)], "expert 1 starts at 11"),       # gap
    ([(0, 10), (9, 20)], "expert 1 starts at 9"),         # overlap
    ([(0, 10), (10, 19)], "not at T = 20"),               # does not cover
    ([(0, 10), (10, 25)], "not at T = 20"),               # overshoots
    ([(1, 10), (10, 20)], "expert 0 starts at 1"),        # does not start at 0
    ([(0, 10), (10, 10), (10, 20)], "empty range"),       # empty expert
    ([(10, 20), (0, 10)], "expert 0 starts at 10"),       # out of order
    ([], "no expert ranges"),
])
def test_check_ranges_rejects(ranges, message):
    with pytest.raises(ValueError, match=message):
        check_ranges(ranges, 20)


def test_check_ranges_accepts_a_tiling():
    check_ranges([(0, 3), (3, 4), (4, 20)], 20)


# ---------------------------------------------------------------------------------- routing ----

def test_module_experts_route_each_sample_and_keep_order():
    ranges = timestep_ranges(1000, 4)
    experts = [ConstantExpert(float(10 * (i + 1))) for i in range(4)]
    router = ModuleExperts(experts, ranges)
    t = torch.tensor([999, 0, 250, 249, 500, 750, 10, 999])
    x = torch.zeros((8, 1, 2, 2))
    out = router(x, t)
    expected_owner = [3, 0, 1, 0, 2, 3, 0, 3]
    for row, owner in enumerate(expected_owner):
        assert torch.equal(out[row], torch.full((3,), 10.0 * (owner + 1))), (row, out[row])
    # Each expert saw only its own timesteps, in batch order.
    assert experts[0].calls[-1].tolist() == [0, 249, 10]
    assert experts[3].calls[-1].tolist() == [999, 750, 999]


def test_module_experts_with_linear_experts_match_each_expert_on_its_rows():
    ranges = timestep_ranges(100, 3)
    experts = [LinearExpert(seed) for seed in range(3)]
    router = ModuleExperts(experts, ranges)
    x = torch.randn((7, 3, 2, 2), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([99, 0, 50, 33, 32, 66, 65])
    out = router(x, t)
    owners = expert_for_timestep(t, ranges)
    for row in range(7):
        expected = experts[owners[row]](x[row:row + 1], t[row:row + 1])[0]
        assert torch.allclose(out[row], expected, atol=1e-6)


def test_single_expert_batch_takes_the_fast_path_unchanged():
    ranges = timestep_ranges(100, 2)
    experts = [LinearExpert(0), LinearExpert(1)]
    router = ModuleExperts(experts, ranges)
    x = torch.randn((4, 3, 2, 2), generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 70)
    assert torch.equal(router(x, t), experts[1](x, t))


def test_gradients_flow_to_the_input_through_the_router():
    ranges = timestep_ranges(100, 3)
    experts = [LinearExpert(seed) for seed in range(3)]
    router = ModuleExperts(experts, ranges)
    x = torch.randn((5, 3, 2, 2), generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    t = torch.tensor([5, 95, 40, 5, 70])
    labels = torch.tensor([0, 1, 2, 1, 0])
    logits = router(x, t)
    (grad,) = torch.autograd.grad(logits.gather(1, labels.view(-1, 1)).sum(), x)
    owners = expert_for_timestep(t, ranges)
    for row in range(5):
        # d logit_y / dx = W_y of the owning expert, reshaped like x.
        expected = experts[owners[row]].weight[labels[row]].view(3, 2, 2)
        assert torch.allclose(grad[row], expected), row


def test_router_rejects_mismatched_counts_and_bad_ranges():
    with pytest.raises(ValueError, match="2 guides for 3 ranges"):
        ModuleExperts([LinearExpert(0), LinearExpert(1)], timestep_ranges(30, 3))
    with pytest.raises(ValueError):
        ModuleExperts([LinearExpert(0), LinearExpert(1)], [(0, 10), (12, 30)])


def test_router_out_of_range_timestep_raises():
    router = ModuleExperts([LinearExpert(0), LinearExpert(1)], timestep_ranges(30, 2))
    with pytest.raises(ValueError, match="outside"):
        router(torch.zeros((2, 3, 2, 2)), torch.tensor([5, 30]))


def test_routed_guide_base_and_single_guide():
    assert RoutedGuide(timestep_ranges(10, 2)).n_experts == 2
    with pytest.raises(NotImplementedError):
        RoutedGuide(timestep_ranges(10, 2))(torch.zeros((1, 3, 2, 2)), torch.tensor([3]))
    expert = LinearExpert(4)
    x = torch.randn((2, 3, 2, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(SingleGuide(expert)(x, torch.tensor([0, 999])), expert(x, None))


# ------------------------------------------------------------------------ merged adapters ----

def test_merged_adapter_routing_gives_the_same_logits_and_gradients_as_unmerged(make_guide, recwarn):
    from ppap.experts import AdapterExperts
    from ppap.experts.adapters import attach_lora_experts

    names, layers = ["e0", "e1", "e2"], ["backbone.0", "backbone.2", "backbone.6"]
    model = attach_lora_experts(make_guide(0), names, 2, 4.0, layers).eval()
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # trained-looking adapters: non-zero A and B, different per expert
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    model.requires_grad_(False)
    base_weights = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    ranges = timestep_ranges(1000, 3)
    plain = AdapterExperts(model, names, ranges).eval()
    merged = AdapterExperts(model, names, ranges, merge=True).eval()
    x = torch.rand((6, 1, 8, 8), generator=torch.Generator().manual_seed(12)) * 2 - 1

    def logits_and_grad(router, t):
        xg = x.clone().requires_grad_(True)
        logits = router(xg, t)
        (grad,) = torch.autograd.grad(logits[:, 3].sum(), xg)
        return logits.detach(), grad

    # A sampler's order (one timestep per batch, from high to low: each change of expert swaps
    # the merged adapter), then a mixed batch (run unmerged: its gradients must stay right).
    batches = [torch.full((6,), t) for t in (999, 700, 500, 300, 0)] + [torch.tensor([999, 0, 500, 333, 334, 666])]
    got = []
    for t in batches:
        got.append(logits_and_grad(merged, t))
        owners = expert_for_timestep(t, ranges).unique().tolist()
        assert merged.merged_adapter == (names[owners[0]] if len(owners) == 1 else None), t
    merged.unmerge()
    assert merged.merged_adapter is None
    # Unmerging puts the trained weights back bit for bit (peft's subtraction alone rounds), so a
    # batch's samples do not depend on the batches and expert changes before it.
    for name, param in model.named_parameters():
        if name in base_weights:
            assert torch.equal(param, base_weights[name]), name
    again = [logits_and_grad(merged, t) for t in batches[:2]]
    merged.unmerge()
    for (logits_first, grad_first), (logits_again, grad_again) in zip(got[:2], again):
        assert torch.equal(logits_first, logits_again) and torch.equal(grad_first, grad_again)

    for t, (got_logits, got_grad) in zip(batches, got):
        expected_logits, expected_grad = logits_and_grad(plain, t)
        assert torch.allclose(got_logits, expected_logits, atol=1e-5), t
        assert torch.allclose(got_grad, expected_grad, atol=1e-5), t
    # The experts really differ, so routing to the wrong one would have failed above.
    assert not torch.allclose(got[0][0], got[-2][0], atol=1e-3)

    # Both routers on one backbone, interleaved: the plain one takes the merged adapter out first.
    merged(x, batches[0])
    assert merged.merged_adapter == "e2"
    assert torch.allclose(plain(x, batches[-2]), got[-2][0], atol=1e-5)
    assert merged.merged_adapter is None
    assert not [w for w in recwarn if "merged" in str(w.message)]


def test_lower_routing_is_the_original_closed_interval_router():
    """PPAP's router searched closed intervals from the bottom: a boundary step went to the expert
    below, which never trained on it. Kept as routing="lower" to measure what that costs."""
    ranges = timestep_ranges(1000, 5)
    t = torch.tensor([0, 199, 200, 201, 400, 800, 999])
    assert expert_for_timestep(t, ranges).tolist() == [0, 0, 1, 1, 2, 4, 4]
    assert expert_for_timestep(t, ranges, "lower").tolist() == [0, 0, 0, 1, 1, 3, 4]
    with pytest.raises(ValueError, match="unknown routing"):
        expert_for_timestep(t, ranges, "upper")
