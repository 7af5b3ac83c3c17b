"""Training throughput and encoder inference time on this machine.

    python bench/bench_train.py [--device cpu|cuda] [--pairs 200] [--layout stereo|mono]
        [--activation-budget MB | --recompute all|none|STAGE,...] [--skip-inference]

* Training: one epoch over ``--pairs`` five-second crops (batch 8) through the whole
  differentiable path (encoder -> console -> loss -> backward -> step): pairs/s and
  seconds per epoch, wall clock and this process's CPU time (which a machine shared
  with other jobs inflates less), and the load average.  Real voice audio (examples/)
  tiled to length; the "mix" is a fixed console setting.  ``--layout stereo`` (the
  default) is train.py's path for a catalogue of mono takes and stereo mixes: a stereo
  render from the mono take, the stereo loss, and a mix with the v3 sends on; ``mono``
  is the earlier benchmark (mono mix, mono loss).  The console stages recomputed in the
  backward pass are train.py's choice for this shape (``--activation-budget``), or
  ``--recompute``'s; the peak RSS of the training part is reported with them.
* Inference: ``DmstModel.predict`` on a 3-minute vocal (bounded excerpt, see
  dmst/encoder/features.py), median of 3 after a warm-up.
Writes bench/results/train_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from dmst import schema  # noqa: E402
from dmst.console import STAGES, render  # noqa: E402
from dmst.data import excerpt_loudness_offset_lu  # noqa: E402
from dmst.effects.gain import integrated_loudness, staging_gain_db  # noqa: E402
from dmst.encoder import load_model  # noqa: E402
from dmst.encoder.optim import WeightAverage  # noqa: E402
from dmst.threads import reuse_freed_memory  # noqa: E402
from dmst.losses import MixLoss  # noqa: E402

SR = 44100


def voice(seconds: float) -> torch.Tensor:
    clips = [torch.from_numpy(sf.read(f, dtype="float32", always_2d=True)[0].T.copy()).mean(0) for f in sorted((ROOT / "examples").glob("*.wav"))]
    x = torch.cat(clips)
    reps = int(seconds * SR) // x.shape[0] + 1
    return x.repeat(reps)[: int(seconds * SR)]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--layout", choices=["stereo", "mono"], default="stereo")
    p.add_argument("--activation-budget", type=float, default=train.DEFAULTS["activation_budget"], metavar="MB",
                   help="as dmst train's: which console stages are recomputed in the backward pass [train.py's default]")
    p.add_argument("--recompute", help="instead: these stages (comma-separated), 'all' or 'none'")
    p.add_argument("--skip-inference", action="store_true", help="measure the training epoch only")
    args = p.parse_args(argv)
    channels = 2 if args.layout == "stereo" else 1
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = load_model("default")
    encoder = model.encoder.to(device).train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=1e-4)
    average = WeightAverage(encoder, train.AVERAGE_HALF_LIFE_EPOCHS * 25)  # as train.py: updated after every step
    long = voice(60.0)
    target = schema.default_dict()
    target["compressor"]["ratio"] = 4.0
    if channels == 2:  # a stereo image from the sends
        target["delay"]["send_db"], target["reverb"]["send_db"] = -24.0, -22.0
    batch = 8
    crop = 5 * SR
    if args.recompute is None:  # what train.py picks for this shape (a mono take)
        plan = train.recompute_stages(argparse.Namespace(batch_size=batch, keep_activations=False,
                                                         activation_budget=args.activation_budget), 1, channels, crop)
        stages = plan["stages"]
    else:
        stages = {"all": list(STAGES), "none": []}.get(args.recompute, [n for n in args.recompute.split(",") if n])
    chunk = train.RECOMPUTE_CHUNK if stages else None  # as train.py: recomputed stages and the loss in chunks
    loss_fn = MixLoss(SR, chunk=chunk).to(device)
    if not stages:
        reuse_freed_memory()  # as train.py does when a step keeps every stage's activations

    # As train.py's crops: the mix is the whole take through the console; each crop carries the
    # take's staging gain and how far the mix's crop sits from the whole mix's loudness.
    staging = staging_gain_db(long[None, None], SR)
    with torch.no_grad():
        long_mix = render(long[None, None], SR, schema.stack([target]), staging_db=staging,
                          output_channels=channels)[0]
    long_mix_lufs = float(integrated_loudness(long_mix[None], SR)[0])

    def step(n):
        starts = torch.randint(0, long.shape[0] - crop, (n,))
        raw = torch.stack([long[s:s + crop] for s in starts])[:, None]
        mix = torch.stack([long_mix[:, s:s + crop] for s in starts])
        offset = excerpt_loudness_offset_lu(mix, [long_mix_lufs] * n, SR)
        context = (staging.expand(n).to(device), offset.to(device))
        loss = loss_fn(train.predict_and_render(encoder, raw.to(device), context, SR, channels, stages, chunk=chunk),
                       mix.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        average.update(encoder)

    step(batch)  # warm-up (JIT, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    load_before = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(0, args.pairs, batch):
        step(min(batch, args.pairs - i))
    if device.type == "cuda":
        torch.cuda.synchronize()
    epoch_s, epoch_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    load_after = os.getloadavg()[0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    times = [float("nan")]
    if not args.skip_inference:
        model = load_model("default")
        three_min = voice(180.0)[None]
        model.predict(three_min[:, : 10 * SR], SR)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            model.predict(three_min, SR)
            times.append(time.perf_counter() - t)
    result = {"device": str(device), "layout": args.layout, "pairs": args.pairs, "crop_seconds": 5, "batch": batch,
              "recomputed_stages": stages, "chunk_items": chunk, "epoch_s": round(epoch_s, 2), "epoch_cpu_s": round(epoch_cpu_s, 2),
              "peak_rss_training_mb": round(peak_mb), "load_average": [round(load_before, 1), round(load_after, 1)],
              "pairs_per_s": round(args.pairs / epoch_s, 2), "predict_3min_s": round(statistics.median(times), 3),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_{device.type}_{args.layout}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
