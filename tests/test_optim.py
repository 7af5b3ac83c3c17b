"""The learned default's optimiser (dmst.encoder.optim): Adam steps in the sigmoid's output space."""
import math

import torch

from dmst.encoder.optim import UNIT_MARGIN, UnitSpaceAdamW


def _logit(u):
    return math.log(u) - math.log1p(-u)


def _descend(optimizer_cls, start_u, target_u, steps, lr=1e-2, **group):
    z = torch.nn.Parameter(torch.tensor([_logit(start_u)]))
    opt = optimizer_cls([{"params": [z], "lr": lr, "weight_decay": 0.0, **group}])
    for _ in range(steps):
        loss = (torch.sigmoid(z) - target_u).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(torch.sigmoid(z.detach()))


def test_a_setting_at_the_edge_of_its_range_moves_as_fast_as_one_in_the_middle():
    # 0.002 -> 0.2 in 60 steps of lr 1e-2 (0.6 of the range at most): in u it gets there (Adam's momentum
    # overshoots a little on the way); as a logit, Adam moves 0.6 logit units at most and u stays under 0.004
    assert abs(_descend(UnitSpaceAdamW, 0.002, 0.2, 60, unit_space=True) - 0.2) < 0.03
    assert _descend(torch.optim.AdamW, 0.002, 0.2, 60) < 0.004
    # and in the middle alike
    assert abs(_descend(UnitSpaceAdamW, 0.5, 0.6, 60, unit_space=True) - 0.6) < 0.03


def test_unit_space_steps_stop_at_the_margin_and_leave_zero_gradients_alone():
    z = torch.nn.Parameter(torch.tensor([0.0, -30.0, 2.0, 30.0]))
    opt = UnitSpaceAdamW([{"params": [z], "lr": 0.2, "weight_decay": 0.0, "unit_space": True}])
    before = z.detach().clone()
    for _ in range(30):
        loss = (torch.sigmoid(z[0]) - 0.0) + (torch.sigmoid(z[1]) - 0.0)  # both pushed down, entry 2 untouched
        opt.zero_grad()
        loss.backward()
        opt.step()
    u = torch.sigmoid(z.detach().double())
    assert abs(float(u[0]) - UNIT_MARGIN) < 1e-6  # stopped at the margin, not at 0 (a logit of -inf)
    assert float(z.detach()[1]) == float(before[1])  # already past the margin: not pulled back in, not pushed further
    assert torch.equal(z.detach()[2:], before[2:])  # zero gradient: bit for bit


def test_other_groups_are_plain_adamw():
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(5))
    w2 = torch.nn.Parameter(w1.detach().clone())
    z = torch.nn.Parameter(torch.zeros(3))
    a = UnitSpaceAdamW([{"params": [z], "lr": 0.1, "unit_space": True}, {"params": [w1], "lr": 0.01}], weight_decay=1e-4)
    b = torch.optim.AdamW([{"params": [w2], "lr": 0.01}], weight_decay=1e-4)
    for _ in range(5):
        for opt, w in ((a, w1), (b, w2)):
            loss = (w ** 2).sum() + torch.sigmoid(z).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.equal(w1, w2)


def test_a_resumed_optimiser_steps_exactly_as_an_uninterrupted_one():
    def run(split):
        z = torch.nn.Parameter(torch.tensor([-5.0, 0.3]))
        opt = UnitSpaceAdamW([{"params": [z], "lr": 0.05, "weight_decay": 0.0, "unit_space": True}])
        for i in range(10):
            if i == split:
                state = opt.state_dict()
                z = torch.nn.Parameter(z.detach().clone())
                opt = UnitSpaceAdamW([{"params": [z], "lr": 0.05, "weight_decay": 0.0, "unit_space": True}])
                opt.load_state_dict(state)
            loss = ((torch.sigmoid(z) - torch.tensor([0.4, 0.9])) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return z.detach()

    assert torch.equal(run(None), run(4))


def test_the_weight_average_has_the_half_life_it_is_given_and_starts_as_a_plain_mean():
    from dmst.encoder.optim import WeightAverage

    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    avg = WeightAverage(module, half_life_steps=100)
    for n in range(1, 11):  # iterates 1..10 after a start of 0: the mean of 0..10 while 1/(n+1) > 1 - decay
        with torch.no_grad():
            module.weight.fill_(float(n))
        avg.update(module)
    assert abs(float(avg.average["weight"]) - 5.0) < 1e-5

    module = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    avg = WeightAverage(module, half_life_steps=10)
    for _ in range(500):  # long past the plain-mean start
        avg.update(module)
    with torch.no_grad():
        module.weight.fill_(1.0)
    for _ in range(10):  # a step from 0 to 1: half way after one half-life, three quarters after two
        avg.update(module)
    assert abs(float(avg.average["weight"]) - 0.5) < 1e-6
    for _ in range(10):
        avg.update(module)
    assert abs(float(avg.average["weight"]) - 0.75) < 1e-6


def test_the_weight_average_keeps_an_unchanging_entry_bit_for_bit_and_applies_it_only_inside_the_block():
    from dmst.encoder.optim import WeightAverage

    module = torch.nn.Linear(3, 2)
    held = module.bias.detach().clone()
    avg = WeightAverage(module, half_life_steps=7)
    for i in range(300):
        with torch.no_grad():
            module.weight.add_(0.01 * (-1) ** i)
        avg.update(module)
    assert torch.equal(avg.average["bias"], held)
    own = module.weight.detach().clone()
    assert not torch.equal(own, avg.average["weight"])
    try:
        with avg.applied(module):
            assert torch.equal(module.weight, avg.average["weight"])
            raise RuntimeError("a failure inside the block")
    except RuntimeError:
        pass
    assert torch.equal(module.weight, own)


def test_a_resumed_weight_average_continues_exactly_as_an_uninterrupted_one():
    from dmst.encoder.optim import WeightAverage

    def run(stop=None, state=None):
        torch.manual_seed(3)
        module = torch.nn.Linear(4, 2)
        avg = WeightAverage(module, half_life_steps=5)
        steps = torch.randn(40, 2, 4)
        for i, d in enumerate(steps):
            if state is not None and i < state["updates"]:
                continue
            if state is not None and i == state["updates"]:
                avg.load_state_dict(state)
            with torch.no_grad():
                module.weight.copy_(d)
            avg.update(module)
            if stop is not None and i + 1 == stop:
                return avg.state_dict()
        return avg.average

    straight = run()
    resumed = run(state=run(stop=17))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
