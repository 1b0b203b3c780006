"""Fine-tuning the shipped default model on a few painted nuclei: today's loop vs the new one.

Protocol (data the project can ship, a look the default model never trained on):

- One 512 x 512 synthetic image (``core.synthetic``, seed 77_000, or ``--seed``) in a
  "nucleolar" style beyond every range the default model's synthetic training data draws
  from: many dark nucleoli and heavy chromatin texture (nuclei that look like rings), strong
  haze, a bright uneven background (``STYLE`` below; ``tests/core/test_bench_finetune.py``
  checks it stays outside).
- The user paints, on the **top half** only: 10 whole nuclei, a 6-px background ring around
  each, and 4 background blobs (discs of radius 12 px away from every nucleus) — the sparse
  convention of the Annotate dock. Training sees only the top half (``--image top.tif``).
- Scores on the **bottom half** (never painted), with dense ground truth: AP@0.5 of the
  instances and pixel IoU of the foreground, predicted as ``napari-unet predict`` does.
- Each recipe trains from the default model; the model is scored at wall-clock marks of
  training time (evaluation time excluded: the trainer's clock is paused while scoring) and
  every ``--every`` steps.
- Throughput: samples/s of each loop against a bare forward + backward + Adam step of the same
  net on a batch of the same shape, measured in the same run.

    nice -n 5 python benchmarks/bench_finetune.py                 # the full run (~25 min)
    python benchmarks/bench_finetune.py --marks 0.25 0.5 --recipes new   # a quick look

Proxies (issue 43, ``finetune_proxies.py``): ``--proxies`` runs each recipe on each proxy,
workflow and seed, scores the unpainted part at each mark (AP@0.5, AP@0.75, pixel IoU, median
predicted/true area of matched objects, shares merged and missed) of the weights a save would
keep (a tenth of the paint held out, as in the Train dock) and prints a Markdown table, then
each recipe's differences to the last one named, seed by seed:

    nice -n 10 python benchmarks/bench_finetune.py --proxies cells3d-tighter clusters \
        --workflows sparse correct --marks 1 3 --seeds 0 --recipes finetune no-brakes

A recipe is a name from ``RECIPES`` or ``NAME:key=value,key=value`` (TrainConfig overrides on
the finetune preset, e.g. ``lr2e-4:lr=2e-4``). ``--share held`` scores the held-out share.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_unet.core.data.evaluation import evaluate_model
from napari_unet.core.data.synthetic import STYLES, synthetic_nuclei
from napari_unet.core.events import LossReport, Progress, ValidationReport
from napari_unet.core.model.checkpoint import resolve_model
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.losses import weighted_cross_entropy
from napari_unet.core.training.optimizer import frozen_parameters
from napari_unet.core.training.sampling import make_batch
from napari_unet.core.training.sources import batch_spec
from napari_unet.core.training.trainer import Trainer
from napari_unet.core.training.trainingset import TrainingSet
from napari_unet.core.training.validation import validation_plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import finetune_proxies  # noqa: E402

SEED = 77_000
SHAPE = (512, 512)
RADIUS = (12.0, 20.0)
#: Nuclei that look like rings: beyond the default model's training ranges (nucleoli <= 3,
#: texture <= 0.5, background <= 0.4, haze <= 0.5 in core.synthetic.random_style).
STYLE = replace(STYLES["widefield"], nucleoli=6.0, texture=0.7, haze=0.6, background=0.5)
N_OBJECTS = 10
RING = 6
N_BLOBS = 4
BLOB_RADIUS = 12

#: Recipes compared (TrainConfig overrides). "today": the Train dock's and CLI's defaults
#: before issue 11 (the fast preset, 256-px tiles, 80 % of patches on annotations, batch
#: preparation in a thread). "new": the finetune preset with worker processes, whatever it is
#: now (docs/decisions.md; since issue 43 it keeps the model's gaps and anchors the weights
#: instead of distilling every unpainted pixel: "before-gaps" below).
RECIPES = {
    "today": dict(preset="fast", annotated_bias=0.8, workers=0),
    "new": dict(preset="finetune", workers="auto"),
    # the new recipe giving its last weights instead of their moving average (not run unless
    # asked for: --recipes today new new-last)
    "new-last": dict(preset="finetune", workers="auto", average=0.0),
    # issue 43: the finetune preset by its name; the preset as it was before it kept the gaps
    # between objects and anchored the weights (distillation towards the start model on every
    # unpainted pixel, weight 6, and the 0.995 weight average); and that one without its brakes
    "finetune": dict(preset="finetune", workers="auto"),
    # (densely painted labels then took per-piece "balanced" class weights)
    "before-gaps": dict(preset="finetune", workers="auto", keep_gaps=0, anchor=0.0,
                        distill=6.0, average=0.995, dense_class_weights="balanced"),
    "no-brakes": dict(preset="finetune", workers="auto", keep_gaps=0, anchor=0.0, distill=0.0,
                      average=0.0),
}


def protocol_data(seed: int = SEED) -> dict[str, np.ndarray]:
    """The image, its dense labels, the top half with painted labels, the bottom half."""
    image, labels = synthetic_nuclei(SHAPE, radius=RADIUS, touching=0.6, seed=seed, style=STYLE)
    half = SHAPE[0] // 2
    top, top_labels = image[:half], labels[:half]
    return {"image": image, "labels": labels, "top": top,
            "painted": paint(top_labels, seed=seed), "bottom": image[half:],
            "bottom_labels": relabel(labels[half:])}


def paint(labels: np.ndarray, seed: int) -> np.ndarray:
    """Sparse labels as a user paints them: whole nuclei (ids 2..), background rings and blobs
    (1), everything else 0 = not annotated. Nuclei cut by the image border are not chosen."""
    rng = np.random.default_rng(seed)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    ids = np.setdiff1d(np.unique(labels[labels > 0]), border)
    chosen_ids = rng.choice(ids, size=N_OBJECTS, replace=False)
    chosen = np.isin(labels, chosen_ids)
    sparse = np.zeros(labels.shape, np.int32)
    sparse[ndi.binary_dilation(chosen, iterations=RING) & (labels == 0)] = 1
    # background blobs: discs whose every pixel is >= 4 px from any nucleus
    far = ndi.distance_transform_edt(labels == 0) > BLOB_RADIUS + 4
    yy, xx = np.mgrid[-BLOB_RADIUS:BLOB_RADIUS + 1, -BLOB_RADIUS:BLOB_RADIUS + 1]
    disc = yy**2 + xx**2 <= BLOB_RADIUS**2
    centres = np.argwhere(far)
    for c in centres[rng.choice(len(centres), size=min(N_BLOBS, len(centres)), replace=False)]:
        y0, x0 = c - BLOB_RADIUS
        region = sparse[max(y0, 0):y0 + disc.shape[0], max(x0, 0):x0 + disc.shape[1]]
        dy, dx = max(-y0, 0), max(-x0, 0)
        region[disc[dy:dy + region.shape[0], dx:dx + region.shape[1]]] = 1
    sparse[chosen] = labels[chosen] + 1
    return sparse


def relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels[labels > 0])
    table = np.zeros(int(labels.max()) + 1, np.int32)
    table[ids] = np.arange(1, ids.size + 1)
    return table[labels]


class PausableClock:
    """Wall-clock seconds with pauses taken out (the trainer's clock while scoring)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.paused_at: float | None = None

    def __call__(self) -> float:
        now = time.monotonic() if self.paused_at is None else self.paused_at
        return now - self.offset

    def pause(self) -> None:
        self.paused_at = time.monotonic()

    def resume(self) -> None:
        self.offset += time.monotonic() - self.paused_at
        self.paused_at = None


def score(model, meta, data) -> dict[str, float]:
    was = model.training
    model.eval()
    out = evaluate_model(model, meta, [(data["bottom"], data["bottom_labels"])])
    model.train(was)
    return {"ap50": round(float(out["ap50"]), 4), "iou": round(float(out["iou"]), 4)}


def score_run(trainer, data) -> dict[str, float]:
    """The weights the run would give now (its moving average, where the recipe keeps one)."""
    with trainer.evaluation_weights() as model:
        return score(model, trainer.meta(), data)


def run_recipe(name: str, overrides: dict, data: dict, marks_s: list[float], every: int,
               log) -> dict:
    model, meta = resolve_model("default")
    samples = TrainingSet([data["top"]], [data["painted"]], convention="sparse",
                          validation_fraction=0.0, normalization=meta.normalization)
    budget_min = max(marks_s) / 60.0
    config = TrainConfig(iterations=100_000, minutes=budget_min, validate_every=0,
                         device="cpu", **config_overrides(overrides, dense=False))
    clock = PausableClock()
    start_wall = time.monotonic()
    trainer = Trainer(model, samples, config, clock=clock)
    start = clock()
    curve_t, curve_s = [], []
    pending = sorted(marks_s)
    first_step_s = None
    for event in trainer.events():
        if not isinstance(event, Progress):
            continue
        t = clock() - start
        if first_step_s is None:
            first_step_s = time.monotonic() - start_wall
        due_t = pending and t >= pending[0]
        due_s = every and trainer.step % every == 0
        if not (due_t or due_s):
            continue
        clock.pause()
        s = score_run(trainer, data)
        if due_t:
            while pending and t >= pending[0]:
                curve_t.append({"mark_min": pending.pop(0) / 60, "t_s": round(t, 1),
                                "step": trainer.step, **s})
                log(f"{name}: {curve_t[-1]}")
        if due_s:
            curve_s.append({"step": trainer.step, "t_s": round(t, 1), **s})
        clock.resume()
    t = clock() - start
    final = score_run(trainer, data)
    for m in pending:  # the budget ended a moment before the last mark
        curve_t.append({"mark_min": m / 60, "t_s": round(t, 1), "step": trainer.step, **final})
    trainer.close()
    samples_s = trainer.step * config.batch_size / max(t, 1e-9)
    return {"recipe": name, "config": {k: v for k, v in config.to_dict().items()
                                       if k in ("preset", "lr", "batch_size", "tile_size",
                                                "warmup_steps", "encoder_lr_scale",
                                                "frozen_levels", "workers", "distill",
                                                "class_weights", "average")},
            "steps": trainer.step, "train_s": round(t, 1), "samples_per_s": round(samples_s, 3),
            "first_step_s": round(first_step_s or float("nan"), 2),
            "curve_time": curve_t, "curve_steps": curve_s}


def bare_samples_per_s(data: dict, overrides: dict, seconds: float) -> float:
    """Forward + backward + Adam step of the default net alone, with the recipe's frozen levels,
    on a batch of the recipe's shape (made once), for ``seconds``."""
    model, meta = resolve_model("default")
    samples = TrainingSet([data["top"]], [data["painted"]], convention="sparse",
                          validation_fraction=0.0, normalization=meta.normalization)
    config = TrainConfig(device="cpu", **config_overrides(overrides, dense=False))
    x, y, w = (torch.from_numpy(a) for a in
               make_batch(samples.snapshot(), batch_spec(config, model, True), 0))
    net = copy.deepcopy(model).train()
    for p in frozen_parameters(net, config.frozen_levels):  # (as the loop: no gradients there)
        p.requires_grad_(False)
    if config.channels_last:  # the same memory format as the loop it is compared with
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds or n < 3:
        opt.zero_grad(set_to_none=True)
        loss = weighted_cross_entropy(net(x), y, w)
        loss.backward()
        opt.step()
        float(loss)
        n += 1
    return n * config.batch_size / (time.monotonic() - t0)


def config_overrides(overrides: dict, dense: bool) -> dict:
    """A recipe's TrainConfig overrides for sparse or densely painted labels: its
    ``dense_class_weights``, where it has one, are the class weights of dense labels."""
    out = dict(overrides)
    dense_weights = out.pop("dense_class_weights", None)
    if dense and dense_weights is not None:
        out["class_weights"] = dense_weights
    return out


def parse_recipe(text: str) -> tuple[str, dict]:
    """``NAME`` from :data:`RECIPES`, or ``NAME:key=value,...`` on the finetune preset."""
    if ":" not in text:
        if text not in RECIPES:
            raise SystemExit(f"unknown recipe {text!r}: one of {tuple(RECIPES)} or NAME:k=v,...")
        return text, RECIPES[text]
    name, _, pairs = text.partition(":")
    overrides = dict(RECIPES["finetune"])
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name, overrides


def run_proxy(name: str, overrides: dict, proxy, workflow: str, marks_s: list[float],
              log, step_marks: list[int] | None = None, device: str = "cpu") -> dict:
    """Fine-tune the default model on ``proxy``'s painted part (``workflow``) and score its
    scored part at each mark of training time (scoring time excluded), or at each of
    ``step_marks`` steps.

    As users run it: a tenth of the paint held out, scored every ``validate_every`` steps, and
    the weights of the best score kept where that part can choose them
    (:func:`~napari_unet.core.training.validation.validation_plan`); each mark scores the
    weights a save would write then, after that step's validation, and the last weights too
    where those differ."""
    model, meta = resolve_model("default")
    samples = TrainingSet(proxy.images, proxy.painted(workflow), convention="sparse",
                          normalization=meta.normalization)
    overrides = config_overrides(overrides, dense=not samples.snapshot().sparse)
    if step_marks:
        budget = dict(iterations=max(step_marks), minutes=None)
    else:
        budget = dict(iterations=100_000, minutes=max(marks_s) / 60.0)
    config = TrainConfig(**budget, device=device, seed=proxy.seed, **overrides)
    validating = validation_plan(samples, config.validate_every, config.keep_best)[0]
    clock = PausableClock()
    trainer = Trainer(model, samples, config, clock=clock)
    start = clock()
    pending, rows = sorted(step_marks or marks_s), []

    def record(mark: float, t: float) -> None:
        with trainer.kept_weights() as net:
            s = finetune_proxies.score_model(net, trainer.meta(), proxy)
        when = {"mark_steps": mark} if step_marks else {"mark_min": mark / 60}
        kept = trainer.best_step if trainer.best_step else trainer.step
        rows.append({**when, "t_s": round(t, 1), "step": trainer.step, "kept_step": kept, **s})
        if kept != trainer.step:  # what the last weights would have scored
            with trainer.evaluation_weights() as net:
                last = finetune_proxies.score_model(net, trainer.meta(), proxy)
            rows[-1]["last"] = last
        log(f"{name} {proxy.name} {workflow} seed {proxy.seed}: {rows[-1]}")

    def due() -> bool:
        return bool(pending) and (trainer.step >= pending[0] if step_marks
                                  else clock() - start >= pending[0])

    for event in trainer.events():
        if not isinstance(event, (LossReport, ValidationReport)):
            continue
        if isinstance(event, LossReport) and validating \
                and event.step % config.validate_every == 0:
            continue  # this step's validation comes next, and may change the kept weights
        t = clock() - start
        if due():
            clock.pause()
            while due():
                record(pending.pop(0), t)
            clock.resume()
    t = clock() - start
    for m in pending:  # the budget ended a moment before the last mark
        record(m, t)
    trainer.close()
    return {"recipe": name, "proxy": proxy.name, "workflow": workflow, "seed": proxy.seed,
            "overrides": overrides, "curve": rows}


def proxies_table(runs: list[dict], starts: dict) -> str:
    """One Markdown row per recipe x proxy x workflow x mark (mean over seeds), after the
    start model's row of each proxy."""
    head = ("| proxy | workflow | recipe | min | steps | AP@0.5 | AP@0.75 | pixel IoU "
            "| area ratio | merged | missed |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    keys = ("ap50", "ap75", "iou", "area_ratio", "merged", "missed")
    for proxy, start in starts.items():
        lines.append(f"| {proxy} | | default model | 0 | 0 | "
                     + " | ".join(f"{np.mean(start[k]):.3f}" for k in keys) + " |")
        for workflow in dict.fromkeys(r["workflow"] for r in runs):
            for recipe in dict.fromkeys(r["recipe"] for r in runs):
                mine = [r for r in runs if (r["proxy"], r["workflow"], r["recipe"])
                        == (proxy, workflow, recipe)]
                if not mine:
                    continue
                for i, row in enumerate(mine[0]["curve"]):
                    rows = [r["curve"][i] for r in mine]
                    mark = (f"{row['mark_min']:g}" if "mark_min" in row
                            else f"{row['mark_steps']} steps")
                    lines.append(f"| {proxy} | {workflow} | {recipe} | {mark} | "
                                 f"{np.mean([r['step'] for r in rows]):.0f} | "
                                 + " | ".join(f"{np.mean([r[k] for r in rows]):.3f}"
                                              for k in keys) + " |")
    return "\n".join(lines)


def differences_table(runs: list[dict]) -> str:
    """Each recipe against the last one named, seed by seed: the mean difference in AP@0.5 and
    pixel IoU, its standard deviation over the seeds and the seeds it wins. A difference
    smaller than its spread over a few seeds says little (docs/models.md)."""
    recipes = list(dict.fromkeys(r["recipe"] for r in runs))
    if len(recipes) < 2:
        return ""
    base = recipes[-1]
    lines = [f"| proxy | workflow | recipe - {base} | steps | seeds | AP@0.5 (sd) | AP wins "
             "| pixel IoU (sd) | IoU wins |", "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["proxy"], r["workflow"], r["recipe"], r["seed"]): r for r in runs}
    for proxy, workflow, recipe in dict.fromkeys((r["proxy"], r["workflow"], r["recipe"])
                                                 for r in runs if r["recipe"] != base):
        pairs = [(r, by_key[(proxy, workflow, base, r["seed"])]) for r in runs
                 if (r["proxy"], r["workflow"], r["recipe"]) == (proxy, workflow, recipe)
                 and (proxy, workflow, base, r["seed"]) in by_key]
        for i in range(min((len(a["curve"]) for a, _ in pairs), default=0)):
            cells = []
            for k in ("ap50", "iou"):
                d = np.array([a["curve"][i][k] - b["curve"][i][k] for a, b in pairs])
                sd = f"{d.std(ddof=1):.3f}" if d.size > 1 else "-"
                cells += [f"{d.mean():+.3f} ({sd})", f"{int((d > 0).sum())}/{d.size}"]
            lines.append(f"| {proxy} | {workflow} | {recipe} | {pairs[0][0]['curve'][i]['step']} "
                         f"| {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(path: str, log) -> int:
    """The table of the runs saved by ``--json`` (one line each), with the start model's
    scores computed again."""
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    model, meta = resolve_model("default")
    starts: dict = {}
    for key in dict.fromkeys((r["proxy"], r.get("share", "tune"), r["seed"]) for r in runs):
        name, share, seed = key  # (the proxy's seed: the --seeds value for cells3d, else
        # the image seed)
        seed = seed if name.startswith("cells3d") else seed - finetune_proxies._image_seed(share, 0)
        start = finetune_proxies.score_model(model, meta, finetune_proxies.build(name, share, seed))
        for k, v in start.items():
            starts.setdefault(name, {}).setdefault(k, []).append(v)
    log(f"{len(runs)} runs from {path}")
    print(proxies_table(runs, starts))
    print("\n" + differences_table(runs))
    return 0


def main_proxies(args, log) -> int:
    recipes = [parse_recipe(r) for r in (args.recipes or ["finetune"])]
    model, meta = resolve_model("default")
    runs, starts = [], {}
    for proxy_name in args.proxies:
        for seed in args.seeds:
            proxy = finetune_proxies.build(proxy_name, args.share, seed)
            start = finetune_proxies.score_model(model, meta, proxy)
            log(f"default model on {proxy.name} ({args.share}, seed {seed}): {start}")
            for k, v in start.items():
                starts.setdefault(proxy.name, {}).setdefault(k, []).append(v)
            for workflow in args.workflows:
                for name, overrides in recipes:
                    run = run_proxy(name, overrides, proxy, workflow,
                                    [60.0 * m for m in args.marks], log, args.step_marks,
                                    args.device)
                    run.update(share=args.share, proxy_seed=seed)
                    runs.append(run)
                    if args.json:  # one line per run, appended: a cut run keeps what it did
                        with open(args.json, "a") as f:
                            f.write(json.dumps(run) + "\n")
    print(f"share {args.share}, seeds {args.seeds}, load {os.getloadavg()[0]:.1f}, "
          f"torch threads {torch.get_num_threads()}\n")
    print(proxies_table(runs, starts))
    print("\n" + differences_table(runs))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", type=float, nargs="+", default=[0.5, 1, 2, 3, 5],
                        help="minutes of training at which to score (the last is the budget)")
    parser.add_argument("--step-marks", type=int, nargs="+", default=None,
                        help="with --proxies: score at these step counts instead of --marks")
    parser.add_argument("--today-marks", type=float, nargs="+", default=None,
                        help="marks for today's recipe (default: --marks plus 12)")
    parser.add_argument("--every", type=int, default=0, help="also score every N steps")
    parser.add_argument("--recipes", nargs="+", default=None,
                        help="recipe names (RECIPES) or NAME:key=value,... (TrainConfig "
                             "overrides on the finetune preset); default: today new, or "
                             "finetune with --proxies")
    parser.add_argument("--proxies", nargs="+", choices=list(finetune_proxies.PROXIES),
                        help="run on these proxies (finetune_proxies.py) instead of the "
                             "original protocol")
    parser.add_argument("--workflows", nargs="+", default=["sparse", "correct"],
                        choices=finetune_proxies.WORKFLOWS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="with --proxies: proxy seeds (synthetic image, painted objects, "
                             "training seed)")
    parser.add_argument("--report", metavar="JSONL",
                        help="print the table of the proxy runs saved with --json, run nothing")
    parser.add_argument("--share", default="tune", choices=finetune_proxies.SHARES,
                        help="with --proxies: the tuning share or the held-out share")
    parser.add_argument("--bare-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=SEED,
                        help="the protocol image (another seed: another image, same style)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cpu",
                        help="with --proxies: where to train (cpu, cuda, auto)")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.report:
        return report(args.report, log)
    if args.proxies:
        return main_proxies(args, log)
    args.recipes = args.recipes or ["today", "new"]
    for r in args.recipes:
        if r not in RECIPES:
            parser.error(f"unknown recipe {r!r}: one of {tuple(RECIPES)}")

    data = protocol_data(args.seed)
    model, meta = resolve_model("default")
    result = {"load_before": os.getloadavg(), "torch_threads": torch.get_num_threads(),
              "protocol": {"seed": args.seed, "shape": SHAPE, "painted_objects": N_OBJECTS,
                           "painted_pixels": int(np.count_nonzero(data["painted"])),
                           "scored_objects": int(data["bottom_labels"].max())},
              "default_model": score(model, meta, data), "recipes": {}}
    log(f"default model on the bottom half: {result['default_model']}")
    for name in args.recipes:
        marks = args.marks if name != "today" else (args.today_marks or [*args.marks, 12])
        result["recipes"][name] = run_recipe(name, RECIPES[name], data,
                                             [60.0 * m for m in marks], args.every, log)
        result["recipes"][name]["bare_samples_per_s"] = round(
            bare_samples_per_s(data, RECIPES[name], args.bare_seconds), 3)
        log(json.dumps({k: v for k, v in result["recipes"][name].items()
                        if not k.startswith("curve")}))
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
