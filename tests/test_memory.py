"""Training's memory savers change nothing but memory: the console's per-stage recomputation
(``render(checkpoint=True)``, or a chosen set of stages) gives the same output and the same gradients
as keeping every stage's intermediates.  The reference is the same chain run with autograd keeping
everything.  Which stages a step recomputes follows from its shape and a budget (``recompute_plan``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dmst import schema
import pytest

from dmst.console import STAGES, activation_bytes, recompute_plan, render

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SR = 44100

# Every stage doing something: a gate, EQ moves, compression, de-essing, saturation, both sends on
# (a stereo output from a mono take) and the limiter engaged.
OVERRIDES = {"gate.threshold_db": -45.0, "eq.presence_gain_db": 5.0, "compressor.threshold_db": -24.0,
             "compressor.ratio": 4.0, "deesser.threshold_db": -40.0, "saturation.drive_db": 9.0,
             "delay.send_db": -18.0, "reverb.send_db": -20.0, "output.loudness_lufs": -14.0,
             "limiter.ceiling_dbtp": -6.0}


def _clip(seconds: float = 0.6) -> torch.Tensor:
    x, sr = sf.read(EXAMPLES / "audioflux_voice.wav", dtype="float32", always_2d=True)
    assert sr == SR
    return torch.from_numpy(np.ascontiguousarray(x[: int(seconds * sr), :1].T))[None]


def _render_and_grads(checkpoint):
    flat = {f"{g}.{k}": v for g, d in schema.default_dict().items() for k, v in d.items()}
    flat.update(OVERRIDES)
    params = {k: torch.full((1,), float(v), dtype=torch.float32, requires_grad=True) for k, v in flat.items()}
    x = _clip()
    y = render(x, SR, params, staging_db=torch.zeros(1), output_channels=2, checkpoint=checkpoint)
    target = torch.flip(y.detach(), dims=[1]) * 0.9  # any fixed target with a stereo image
    (y - target).pow(2).mean().backward()
    return y.detach(), {k: p.grad for k, p in params.items()}


@pytest.mark.parametrize("checkpoint", [True, ("gate", "compressor", "deesser", "sends", "limiter")],
                         ids=["every stage", "some stages"])
def test_recomputed_stages_give_the_same_render_and_gradients(checkpoint):
    kept, grads_kept = _render_and_grads(checkpoint=False)
    recomputed, grads_recomputed = _render_and_grads(checkpoint=checkpoint)
    assert kept.shape[1] == 2 and float((kept[:, 0] - kept[:, 1]).abs().max()) > 1e-3  # the sends made it stereo
    torch.testing.assert_close(recomputed, kept, rtol=0, atol=1e-6)
    moved = [k for k, g in grads_kept.items() if g is not None and float(g.abs().max()) > 0]
    assert len(moved) > 20  # the test means something: gradients reach most of the chain
    for k in moved:
        torch.testing.assert_close(grads_recomputed[k], grads_kept[k], rtol=1e-4, atol=1e-9, msg=k)


def test_recomputed_stages_taken_in_chunks_give_the_whole_batchs_render_and_gradients():
    """Training's memory plan renders the recomputed stages two items at a time.  A batch of three different
    items (the last with both sends off, so one chunk has no returns at all): the render and every gradient are
    those of the whole batch with every stage kept."""
    flat = {f"{g}.{k}": v for g, d in schema.default_dict().items() for k, v in d.items()}
    flat.update(OVERRIDES)
    values = {k: [float(v)] * 3 for k, v in flat.items()}
    values["compressor.threshold_db"] = [-24.0, -30.0, -18.0]
    values["saturation.drive_db"] = [9.0, 3.0, 12.0]
    values["delay.send_db"][2] = values["reverb.send_db"][2] = -60.0  # the bottom of the range: off
    x = torch.cat([_clip(), 0.5 * _clip(), torch.flip(_clip(), dims=[-1])])
    out = []
    for checkpoint, chunk in ((False, None), (True, 2)):
        params = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
        y = render(x, SR, params, staging_db=torch.zeros(3), output_channels=2, checkpoint=checkpoint, chunk=chunk)
        (y - torch.flip(y.detach(), dims=[1]) * 0.9).pow(2).mean().backward()
        out.append((y.detach(), {k: p.grad for k, p in params.items()}))
    (kept, grads_kept), (chunked, grads_chunked) = out
    assert float((kept[2, 0] - kept[2, 1]).abs().max()) == 0  # the third item has no returns: dual mono
    assert float((kept[0, 0] - kept[0, 1]).abs().max()) > 1e-3  # the others are stereo
    torch.testing.assert_close(chunked, kept, rtol=0, atol=1e-6)
    moved = [k for k, g in grads_kept.items() if g is not None and float(g.abs().max()) > 0]
    assert len(moved) > 20
    for k in moved:
        torch.testing.assert_close(grads_chunked[k], grads_kept[k], rtol=1e-4, atol=1e-9, msg=k)


def test_validation_crops_are_read_again_each_time_and_are_the_crops_drawn_pair_after_pair():
    import train
    from dmst.data import AlignedPair

    g = torch.Generator().manual_seed(1)
    pairs = [AlignedPair.from_audio(f"p{i}", torch.randn(1, n, generator=g) * 0.1, torch.randn(2, n, generator=g) * 0.1, SR)
             for i, n in enumerate([SR, 3 * SR, SR // 4])]  # the last is shorter than a crop: padded
    eager = [train.batch_of_crops([p], SR // 2, gen, "cpu", 2, SR) for gen in [torch.Generator().manual_seed(7)] for p in pairs]
    lazy = train.ValidationCrops(pairs, SR // 2, torch.Generator().manual_seed(7), "cpu", 2, SR)
    assert len(lazy) == 3
    for _ in range(2):  # the same crops every time they are iterated
        got = list(lazy)
        for (raw, mix, (staging, offset)), (raw_e, mix_e, (staging_e, offset_e)) in zip(got, eager, strict=True):
            assert torch.equal(raw, raw_e) and torch.equal(mix, mix_e)
            assert torch.equal(staging, staging_e) and torch.equal(offset, offset_e)
    assert not torch.equal(got[0][1], got[1][1][..., : got[0][1].shape[-1]])  # different pairs, different crops

    # several crops a pair: one batch a pair, the crops batch_of_crops draws for that pair repeated
    eager = [train.batch_of_crops([p] * 3, SR // 2, gen, "cpu", 2, SR) for gen in [torch.Generator().manual_seed(7)] for p in pairs]
    lazy = train.ValidationCrops(pairs, SR // 2, torch.Generator().manual_seed(7), "cpu", 2, SR, per_pair=3)
    for (raw, mix, (staging, offset)), (raw_e, mix_e, (staging_e, offset_e)) in zip(lazy, eager, strict=True):
        assert raw.shape[0] == 3 and torch.equal(raw, raw_e) and torch.equal(mix, mix_e) and torch.equal(offset, offset_e)
    assert not torch.equal(eager[1][1][0], eager[1][1][1])  # a pair's crops are drawn at different places


def test_recompute_plan_keeps_every_stage_within_the_budget_and_recomputes_every_stage_beyond_it():
    import train

    mono = dict(batch=8, samples=5 * SR, input_channels=1)
    sizes = activation_bytes(**mono)
    total = sum(sizes.values())
    assert set(sizes) == set(STAGES) and all(v > 0 for v in sizes.values())
    assert recompute_plan(**mono) == ()  # no budget: keep everything
    assert recompute_plan(**mono, budget_bytes=total) == ()
    assert recompute_plan(**mono, budget_bytes=total - 1) == STAGES
    assert recompute_plan(**mono, budget_bytes=0) == STAGES
    # The shape decides: a stereo output doubles the late stages, twice the crop doubles every stage.
    stereo = activation_bytes(**mono, output_channels=2)
    assert stereo["limiter"] == 2 * sizes["limiter"] and stereo["eq"] == sizes["eq"]
    assert activation_bytes(8, 10 * SR, 1)["eq"] == 2 * sizes["eq"]
    # train.py's default budget: bench_train's mono step (8 x 5 s) keeps its stages, its stereo step recomputes them.
    budget = train.DEFAULTS["activation_budget"] * 1e6
    assert recompute_plan(**mono, budget_bytes=budget) == ()
    assert recompute_plan(**mono, output_channels=2, budget_bytes=budget) == STAGES


def test_unknown_stage_names_are_refused():
    x = _clip(0.1)
    params = {f"{g}.{k}": torch.full((1,), float(v)) for g, d in __import__("dmst").schema.default_dict().items()
              for k, v in d.items()}
    with pytest.raises(ValueError, match="unknown console stages"):
        render(x, SR, params, checkpoint=("gate", "reverbb"))
