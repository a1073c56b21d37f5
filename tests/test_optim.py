"""methods.optim.Adam is torch.optim.Adam's arithmetic, bit for bit."""

import copy

import torch

from methods.optim import Adam


def test_adam_matches_torch_optim_adam_bit_for_bit_with_two_learning_rates():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    x, y = torch.randn(16, 7), torch.randint(0, 3, (16,))

    def groups(m):
        return [{"params": m[0].parameters(), "lr": 1e-4}, {"params": m[2].parameters(), "lr": 1e-2}]

    theirs, ours = torch.optim.Adam(groups(model)), Adam(groups(twin))
    for _ in range(25):
        for m, opt in ((model, theirs), (twin, ours)):
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert not any(torch.equal(a, b) for a, b in zip(twin.parameters(), start.parameters()))  # all trained
    ours.zero_grad()
    assert all(p.grad is None for p in twin.parameters())
