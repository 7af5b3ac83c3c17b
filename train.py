"""Train, or fine-tune, a dmst model on (raw vocal, finished mix) pairs.

    python train.py --data DATA --out runs/mine                  # from scratch
    python train.py --data DATA --out runs/mine --init default   # fine-tune the bundled model
    python train.py --data DATA --out runs/mine --resume         # continue after a kill
    python train.py --data DATA --out runs/mine --global         # one setting for all songs

DATA holds raw/NAME.wav and mixed/NAME.wav (any soundfile format, rate, channels).
The encoder predicts console settings for each raw crop; the console renders them;
the loss compares the render with the engineer's mix; gradients flow back through the
effects into the encoder.  Writes RUN_DIR/model.pt (best on validation), last.pt
(resumable) and metrics.json.  Read top to bottom: setup, data, model, loop.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dmst import schema
from dmst.console import render
from dmst.data import DataError, check_dir, excerpt_loudness_offset_lu, random_crop, split_by_song
from dmst.encoder import DmstModel, Encoder, ModelError, model_from_checkpoint, read_checkpoint
from dmst.encoder.features import SAMPLE_RATE
from dmst.encoder.model import atomic_save, resolve_model_path
from dmst.losses import MixLoss
from dmst.metrics import audio_metrics, mean_metrics

FEW_PAIRS = 10  # below this, one global setting often beats a network


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="dmst train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with raw/ and mixed/ subfolders")
    p.add_argument("--out", required=True, help="run folder for model.pt, last.pt, metrics.json")
    p.add_argument("--init", default=None, help="model to fine-tune from: 'default' (bundled) or a model.pt path")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--global", dest="global_only", action="store_true", help="fit one setting for all songs (for very few pairs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES", help="stop cleanly after this many minutes")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-seconds", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def lr_factor(progress: float) -> float:
    """Cosine decay from 1 to 0.1 over the run (Loshchilov & Hutter, "SGDR", ICLR 2017): late steps refine, not jump."""
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def fail(message: str) -> None:
    print(f"dmst train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def batch_of_crops(pairs, length, generator, device):
    """Aligned mono crops (batch, 1, length) of raw and mix, and per crop: the level stages' whole-song context.

    ``staging``: the console's input gain, measured on the whole raw file.  ``offset``:
    how much louder the mix's crop is than the whole mix, so the rendered crop is
    compared with the mix's crop at the same place relative to the loudness target.
    """
    raws, mixes = zip(*(random_crop(p, length, generator) for p in pairs))
    raw = torch.stack([r.mean(0, keepdim=True) for r in raws])
    mix = torch.stack([m.mean(0, keepdim=True) for m in mixes])
    offset = excerpt_loudness_offset_lu(mix, [p.mixed_lufs for p in pairs], SAMPLE_RATE)
    staging = torch.tensor([p.staging_db for p in pairs], dtype=torch.float32)
    return raw.to(device), mix.to(device), (staging.to(device), offset.to(device))


def predict_and_render(encoder, raw, context):
    """The whole differentiable path: staged raw -> encoder -> settings -> console -> mix."""
    staging, offset = context
    staged = raw[:, 0] * 10 ** (staging[:, None] / 20)
    params = schema.denormalize(encoder(staged))
    return render(raw, SAMPLE_RATE, params, staging_db=staging, excerpt_offset_lu=offset)


@torch.no_grad()
def evaluate(encoder, val_batches, loss_fn):
    """Mean loss and audio metrics of the encoder on fixed validation crops."""
    encoder.eval()
    losses, rows = [], []
    for raw, mix, context in val_batches:
        pred = predict_and_render(encoder, raw, context)
        losses.append(float(loss_fn(pred, mix)))
        rows.append(audio_metrics(pred.cpu(), mix.cpu(), SAMPLE_RATE))
    encoder.train()
    return {"loss": sum(losses) / len(losses), **mean_metrics(rows)}


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    started = time.monotonic()

    # ---- setup -------------------------------------------------------------------
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    resume = None
    if args.resume:
        if not (out / "last.pt").exists():
            fail(f"nothing to resume: {out / 'last.pt'} does not exist; start the run without --resume")
        resume = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        if resume.get("finished") and resume["epoch"] >= args.epochs:
            print(f"run in {out} already finished {resume['epoch']} epochs; raise --epochs to train more")
            return 0

    # ---- data: check every pair, report, split by song ---------------------------
    try:
        report = check_dir(args.data, sample_rate=SAMPLE_RATE, progress=not args.quiet)
    except DataError as e:
        fail(str(e))
    print(report.format())
    usable = report.usable
    if not usable:
        fail("no usable pairs after checking; fix the problems listed above")
    if len(usable) < FEW_PAIRS and not args.global_only:
        print(f"note: only {len(usable)} usable pairs; with under {FEW_PAIRS}, one global setting (--global) is often better than a network")
    train_names, val_names = split_by_song([p.name for p in usable], args.val_fraction, args.seed)
    train_pairs = [p for p in usable if p.name in train_names]
    val_pairs = [p for p in usable if p.name in val_names] or train_pairs  # a single song validates on itself
    crop = int(args.crop_seconds * SAMPLE_RATE)
    val_gen = torch.Generator().manual_seed(12345)
    val_batches = [batch_of_crops([p], crop, val_gen, device) for p in val_pairs]

    # ---- model: fresh, fine-tuned from --init, or resumed ------------------------
    if resume is not None:
        encoder = model_from_checkpoint(resume["model"]).encoder
    elif args.init is not None:
        try:
            init_ckpt = read_checkpoint(resolve_model_path(args.init))
        except ModelError as e:
            fail(str(e))
        encoder = model_from_checkpoint(init_ckpt).encoder
        if args.global_only:  # keep the init model's learned default as the starting global setting
            logits = encoder.default_logits.detach().clone()
            encoder = Encoder(global_only=True)
            encoder.default_logits.data.copy_(logits)
    else:
        encoder = Encoder(global_only=args.global_only)
    encoder.to(device).train()
    # The learned default moves faster than the network: it carries the style's average.
    base_lrs = [args.lr * 10, args.lr]
    optimizer = torch.optim.AdamW(
        [{"params": [encoder.default_logits], "lr": base_lrs[0], "weight_decay": 0.0},
         {"params": [p for n, p in encoder.named_parameters() if n != "default_logits"], "lr": base_lrs[1]}],
        weight_decay=1e-4,
    )
    loss_fn = MixLoss(SAMPLE_RATE).to(device)

    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        history, best_val, first_epoch = resume["history"], resume["best_val"], resume["epoch"] + 1
        baselines, elapsed_before = resume["baselines"], resume["elapsed_s"]
        print(f"resuming {out} after epoch {resume['epoch']}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        history, best_val, first_epoch, elapsed_before = [], math.inf, 1, 0.0
        # Baselines on the same validation crops: the raw input itself, and the model we start from.
        raw_rows = [audio_metrics(raw.cpu(), mix.cpu(), SAMPLE_RATE) for raw, mix, _ in val_batches]
        baselines = {"raw_input": mean_metrics(raw_rows), "init_model": evaluate(encoder, val_batches, loss_fn)}
    data_summary = {"pairs_usable": len(usable), "pairs_skipped": len(report.skipped), "train_songs": len(train_pairs),
                    "val_songs": len(val_names), "crop_seconds": args.crop_seconds}

    def budget_left() -> bool:
        return args.time_budget is None or elapsed_before + time.monotonic() - started < args.time_budget * 60

    def progress(epoch: int, step: int) -> float:
        """How far through the run we are: by steps, or by the clock when a time budget ends it sooner."""
        by_steps = (epoch - 1 + step / steps_per_epoch) / args.epochs
        if args.time_budget is None:
            return by_steps  # deterministic: a resumed run follows the same schedule
        return max(by_steps, (elapsed_before + time.monotonic() - started) / (args.time_budget * 60))

    # ---- training loop -----------------------------------------------------------
    steps_per_epoch = math.ceil(len(train_pairs) / args.batch_size)
    stopped_early = False
    for epoch in range(first_epoch, args.epochs + 1):
        # Each epoch's shuffling and crops come from (seed, epoch) alone, so a resumed run repeats them exactly.
        gen = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        order = torch.randperm(len(train_pairs), generator=gen).tolist()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{args.epochs}", disable=args.quiet, file=sys.stderr, leave=False)
        train_losses = []
        for step in bar:
            if not budget_left():
                stopped_early = True
                break
            batch = [train_pairs[i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]]
            raw, mix, context = batch_of_crops(batch, crop, gen, device)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * lr_factor(progress(epoch, step))
            loss = loss_fn(predict_and_render(encoder, raw, context), mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            train_losses.append(loss.item())
            bar.set_postfix(loss=f"{train_losses[-1]:.4f}")
        bar.close()
        if stopped_early and not train_losses:
            break

        val = evaluate(encoder, val_batches, loss_fn)
        elapsed = elapsed_before + time.monotonic() - started
        history.append({"epoch": epoch, "train_loss": sum(train_losses) / len(train_losses), "val": val, "elapsed_s": round(elapsed, 1),
                        "partial_epoch": stopped_early})
        improved = val["loss"] < best_val
        if improved:
            best_val = val["loss"]
            model = DmstModel(encoder, name=out.name, meta={"training": data_summary, "epoch": epoch, "val": val, "init": args.init})
            model.save(out / "model.pt")
        atomic_save({"model": DmstModel(encoder, name=out.name).checkpoint(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "history": history, "best_val": best_val, "baselines": baselines, "elapsed_s": elapsed,
                     "args": {k: v for k, v in vars(args).items() if v is not None}, "finished": epoch == args.epochs},
                    out / "last.pt")
        write_metrics(out, history, baselines, data_summary)
        print(f"epoch {epoch}: train {history[-1]['train_loss']:.4f}  val {val['loss']:.4f}  "
              f"mrstft {val['mrstft']:.3f}  loudness {val['loudness_error_lu']:.2f} LU{'  *best' if improved else ''}")
        if stopped_early:
            break

    if stopped_early:
        print(f"time budget of {args.time_budget} min reached; best model kept in {out / 'model.pt'}")
    print(f"best validation loss {best_val:.4f} (init model {baselines['init_model']['loss']:.4f}); model: {out / 'model.pt'}")
    return 0


def write_metrics(out: Path, history, baselines, data_summary) -> None:
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps({"baselines": baselines, "epochs": history, "data": data_summary}, indent=2))
    tmp.replace(out / "metrics.json")


if __name__ == "__main__":
    sys.exit(main())
