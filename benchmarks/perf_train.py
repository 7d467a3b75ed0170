"""Training-step performance of rftbench's trainer, side by side with hand-written loops.

On the same model, data and batch size, interleaved repetitions, medians of per-step times:

- ``pgd_at_step_vs_handwritten``: rftbench's PGD-AT step (``rftbench.training.TrainStep``, the
  code path the ``Trainer`` runs for every batch) over a minimal hand-written PyTorch + torchattacks
  PGD-AT step (target <= 1.05);
- ``pgd_at_step_vs_k_plus_1_plain_steps``: attack efficiency, rftbench's PGD-k AT step over
  (k + 1) x a plain forward+backward+update step (target <= 1.15; the k attack passes only
  need input gradients, so about 0.85 is reachable);
- ``eps0_step_vs_plain_step``: rftbench's step at eps = 0 (attack skipped) over a plain
  fine-tuning step (target <= 1.10).
- ``lora_step_vs_full_step`` and ``linear_probe_step_vs_full_step``: rftbench's PGD-k AT step
  under the ``lora`` (default targets, rank 8) and ``linear_probe`` regimes over the same step with
  full fine-tuning, on the same model and batch (target <= 1.0: freezing must not cost; in a
  PGD-k step the k input-gradient passes dominate and a frozen backbone saves only part of the
  last backward, so expect little below 1); ``lora_trainable_params_vs_full``,
  ``linear_probe_trainable_params_vs_full`` and the ``..._optimizer_state_vs_full`` ratios
  (bytes of optimizer state after a step) say what the regimes save in memory.

CPU default: a timm ``resnet18`` (random init) at 32 px, batch 32, PGD-10, one intra-op thread:
on a CPU shared with other jobs, multi-threaded steps stall at thread barriers whenever a
core is taken (single steps then vary 20-fold and medians mean nothing); one thread gives
stable ratios. ``--threads 0`` uses torch's default on a quiet machine. On a GPU, e.g.:
``python benchmarks/perf_train.py --image-size 224 --batch-size 128 --precision bf16 --channels-last``.
The last line printed is one JSON object ``{"<what>": {"ratio": r, "target": t}, ...}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchattacks  # noqa: E402

from rftbench.attacks import TrainAttack  # noqa: E402
from rftbench.config import parse_config  # noqa: E402
from rftbench.models import create_model  # noqa: E402
from rftbench.objectives import create_objective  # noqa: E402
from rftbench.task import resolve_device  # noqa: E402
from rftbench.regimes import create_regime, set_trainable  # noqa: E402
from rftbench.training import BatchMeter, TrainStep, amp_setup, make_lr_schedule, make_optimizer  # noqa: E402
from rftbench.training.optim import set_train_mode  # noqa: E402

TARGETS = {"pgd_at_step_vs_handwritten": 1.05, "pgd_at_step_vs_k_plus_1_plain_steps": 1.15,
           "eps0_step_vs_plain_step": 1.10, "lora_step_vs_full_step": 1.0, "linear_probe_step_vs_full_step": 1.0,
           "lora_trainable_params_vs_full": 0.1, "linear_probe_trainable_params_vs_full": 0.05,
           "lora_optimizer_state_vs_full": 0.1, "linear_probe_optimizer_state_vs_full": 0.05}
REGIMES = {"full": {"name": "full"}, "lora": {"name": "lora", "params": {"rank": 8}}, "linear_probe": {"name": "linear_probe"}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="timm:resnet18", help="any rftbench model name (random init)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--attack-steps", type=int, default=10, help="k of PGD-k")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (medians are reported)")
    p.add_argument("--pgd-steps-per-rep", type=int, default=2, help="PGD-AT steps timed per repetition")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-regimes", dest="regimes", action="store_false", help="skip the regime ratios")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads on CPU (0: torch's default); see the module docstring")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    cfg = parse_config({
        "model": {"name": args.model, "pretrained": False},
        "threat": {"norm": "Linf", "eps": args.eps},
        "attack": {"name": "pgd", "steps": args.attack_steps},
        "train": {"objective": "pgd_at", "optimizer": "sgd", "lr": 1e-3, "precision": args.precision,
                  "channels_last": args.channels_last, "device": args.device},
    }, "perf_train")
    device = resolve_device(cfg.train.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    amp_dtype, scaler = amp_setup(cfg.train.precision, device)
    model = create_model(args.model, args.num_classes, pretrained=False).to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    c = model.spec.input_size[0]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, c, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    k, eps, ac = args.attack_steps, args.eps, cfg.attack
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)  # noqa: E731

    # rftbench: exactly the objects the Trainer builds, and the step it calls for every batch
    opt = make_optimizer(model, cfg)
    lr_sched = make_lr_schedule(opt, total_steps=10**9, warmup_steps=0)
    attack = TrainAttack(model, ac.name, cfg.threat.norm, ac.steps, ac.step_ratio, ac.random_start, ac.bn_mode)
    step = TrainStep(model, create_objective(cfg.train.objective), attack, opt, lr_sched, device=device, amp_dtype=amp_dtype,
                     scaler=scaler, grad_clip=None, channels_last=args.channels_last)
    meters = (BatchMeter(device), BatchMeter(device))
    batch = {"i": 0}

    def rftbench_step(eps_now: float) -> Callable[[], None]:
        def run() -> None:
            step(x, y, eps_now, step_index=batch["i"], meters=meters)
            if device.type == "cpu":
                step.diverged_at()  # the Trainer checks every batch on CPU
            batch["i"] += 1
        return run

    # hand-written: torchattacks PGD + cross-entropy + SGD, nothing else
    hand_opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    hand_attack = torchattacks.PGD(model, eps=eps, alpha=ac.step_ratio * eps, steps=k, random_start=True)
    hand_scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None

    def backward_and_update(loss: torch.Tensor) -> None:
        hand_opt.zero_grad(set_to_none=True)
        if hand_scaler is not None:
            hand_scaler.scale(loss).backward()
            hand_scaler.step(hand_opt)
            hand_scaler.update()
        else:
            loss.backward()
            hand_opt.step()

    def hand_pgd_at() -> None:
        with autocast():
            x_adv = hand_attack(x, y)
            loss = F.cross_entropy(model(x_adv), y)
        backward_and_update(loss)

    def plain_step() -> None:
        with autocast():
            loss = F.cross_entropy(model(x), y)
        backward_and_update(loss)

    # PGD-AT variants run pgd_steps_per_rep steps per repetition, the plain ones (k + 1) times as
    # many, so that every variant takes a similar share of each repetition
    n_pgd = args.pgd_steps_per_rep
    variants = {"handwritten_pgd_at": (hand_pgd_at, n_pgd), "rftbench_pgd_at": (rftbench_step(eps), n_pgd),
                "plain_step": (plain_step, n_pgd * (k + 1)), "rftbench_eps0": (rftbench_step(0.0), n_pgd * (k + 1))}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for fn, _ in variants.values():
        for _ in range(args.warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    t_all = time.perf_counter()
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no variant always first
        for name in order:
            fn, n = variants[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / n)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ratios = {
        "pgd_at_step_vs_handwritten": med["rftbench_pgd_at"] / med["handwritten_pgd_at"],
        "pgd_at_step_vs_k_plus_1_plain_steps": med["rftbench_pgd_at"] / ((k + 1) * med["plain_step"]),
        "eps0_step_vs_plain_step": med["rftbench_eps0"] / med["plain_step"],
    }
    print(f"device {device} ({torch.get_num_threads()} threads), model {args.model}, {args.image_size} px, "
          f"batch {args.batch_size}, PGD-{k}, precision {args.precision}"
          f"{', channels_last' if args.channels_last else ''}; {args.reps} interleaved repetitions "
          f"in {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    for name, t in med.items():
        spread = f"{min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f}"
        print(f"  {name:<20} median {t * 1e3:9.1f} ms/step  (range {spread} ms)", file=sys.stderr)
    if args.regimes:
        ratios.update(regime_ratios(args, cfg, device, x, y))
    result = {key: {"ratio": round(r, 4), "target": TARGETS[key]} for key, r in ratios.items()}
    print(json.dumps(result))
    return result


def regime_step(args, cfg, device, regime_cfg: dict):
    """(a PGD-k TrainStep of the regime on a fresh copy of the model, trainable parameters,
    optimizer-state bytes after one step); the same initial weights for every regime."""
    torch.manual_seed(0)
    model = create_model(args.model, args.num_classes, pretrained=False).to(device)
    rcfg = cfg.model_copy(deep=True)
    rcfg.model.regime = regime_cfg  # validate_assignment: parsed into a RegimeConfig
    regime = create_regime(rcfg.model.regime)
    regime.prepare(model)
    model.to(device)
    opt = make_optimizer(model, rcfg, regime)
    trained = regime.trainable(model, 0)
    set_trainable(model, trained)
    set_train_mode(model, rcfg, trained, regime)
    ac = cfg.attack
    attack = TrainAttack(model, ac.name, cfg.threat.norm, ac.steps, ac.step_ratio, ac.random_start, ac.bn_mode)
    amp_dtype, scaler = amp_setup(cfg.train.precision, device)
    step = TrainStep(model, create_objective(cfg.train.objective), attack, opt, device=device, amp_dtype=amp_dtype,
                     scaler=scaler, channels_last=args.channels_last)
    n_trained = sum(p.numel() for n, p in model.net.named_parameters() if n in trained)
    return step, n_trained, opt


def _state_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
               if isinstance(t, torch.Tensor))


def regime_ratios(args, cfg, device, x, y) -> dict[str, float]:
    """lora / linear_probe PGD-k step times, trainable parameters and optimizer state over full's."""
    built = {name: regime_step(args, cfg, device, rc) for name, rc in REGIMES.items()}
    for step, _, _ in built.values():
        for _ in range(args.warmup):
            step(x, y, args.eps)
    times: dict[str, list[float]] = {name: [] for name in built}
    names = list(built)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            step = built[name][0]
            t0 = time.perf_counter()
            for _ in range(args.pgd_steps_per_rep):
                step(x, y, args.eps)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / args.pgd_steps_per_rep)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    full_n, full_state = built["full"][1], _state_bytes(built["full"][2])
    out = {}
    for name in ("lora", "linear_probe"):
        out[f"{name}_step_vs_full_step"] = med[name] / med["full"]
        out[f"{name}_trainable_params_vs_full"] = built[name][1] / full_n
        out[f"{name}_optimizer_state_vs_full"] = _state_bytes(built[name][2]) / max(1, full_state)
    print("  regimes: " + ", ".join(f"{n} {t * 1e3:.1f} ms/step, {built[n][1]} trainable" for n, t in med.items()),
          file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
