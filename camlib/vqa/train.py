"""Train VQANet on generated Shapes-VQA data (CPU, seeded, reproducible).

    python -m camlib.vqa.train --epochs 18 --scenes-per-epoch 8000 --threads 1 --seed 0 --out camlib/assets/vqa

Every epoch draws fresh training scenes (scene seeds below ``TEST_SEED_BASE``, disjoint
from the held-out scenes), each with up to ``--per-family`` questions per family.  The
image path runs once per scene and its CAM-layer output is shared by all the scene's
questions, which makes CPU training cheap.  At the end the model is evaluated on
``--test-scenes`` held-out scenes (seeds ``TEST_SEED_BASE + i``, one question per family
each) and ``vqa_shapes.pt`` (state_dict) and ``vqa_shapes.json`` (metadata) are written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from . import ASSET_DIR, scenes
from .model import CAM_LAYER, CODE_VERSION, DEFAULT_HPARAMS, VQANet, build_model

TEST_SEED_BASE = 1_000_000_000
"""Held-out scene seeds are TEST_SEED_BASE + i; training scene seeds stay below it."""
TEST_QUESTION_SEED = 12345
"""Question seed of the held-out set."""
WEIGHTS_NAME, META_NAME = "vqa_shapes.pt", "vqa_shapes.json"


def heldout_set(n_scenes: int, with_evidence: bool = False) -> scenes.VQAArrays:
    """The held-out evaluation set: scenes TEST_SEED_BASE .. +n_scenes-1, one question
    per family each.  Its first questions are the same for every ``n_scenes``."""
    return scenes.build_dataset(range(TEST_SEED_BASE, TEST_SEED_BASE + n_scenes),
                                question_seed=TEST_QUESTION_SEED, per_family=1,
                                with_evidence=with_evidence)


N_FIXED = 300
"""Size of the fixed held-out question set used by the tests (first questions of heldout_set)."""


def fixed_heldout_set() -> scenes.VQAArrays:
    """The first N_FIXED held-out questions (and their scenes) as arrays."""
    data = heldout_set(80)   # ~4.4 questions per scene -> ~350 questions
    keep = slice(0, N_FIXED)
    if len(data.answers) < N_FIXED:
        raise RuntimeError("fixed held-out set too small")
    return scenes.VQAArrays(images=data.images, questions=data.questions[keep],
                            answers=data.answers[keep], families=data.families[keep],
                            scene_index=data.scene_index[keep], scene_seeds=data.scene_seeds,
                            evidence=None, objects=data.objects)


def first300_accuracy(model: VQANet) -> float:
    """Accuracy (%) of ``model`` on :func:`fixed_heldout_set`."""
    data = fixed_heldout_set()
    return round(100.0 * float((predict(model, data) == data.answers).mean()), 2)


@torch.no_grad()
def predict(model: VQANet, data: scenes.VQAArrays, batch_scenes: int = 128) -> np.ndarray:
    """Predicted answer ids (N,) for every question of ``data`` (model must be in eval)."""
    preds = np.empty(len(data.answers), dtype=np.int64)
    questions = torch.from_numpy(data.questions)
    for start in range(0, len(data.images), batch_scenes):
        stop = min(start + batch_scenes, len(data.images))
        rows = np.nonzero((data.scene_index >= start) & (data.scene_index < stop))[0]
        if len(rows) == 0:
            continue
        cam = model.encoder(scenes.to_tensor(data.images[start:stop]))
        q = model.encode_question(questions[rows])
        logits = model.answer(cam[torch.from_numpy(data.scene_index[rows] - start)], q)
        preds[rows] = logits.argmax(1).numpy()
    return preds


def accuracy_table(preds: np.ndarray, data: scenes.VQAArrays) -> dict:
    """{'per_family': {family: {'accuracy', 'n'}}, 'overall': acc, 'n': N} (accuracy in %)."""
    correct = preds == data.answers
    table = {}
    for f, name in enumerate(scenes.FAMILIES):
        sel = data.families == f
        table[name] = {"accuracy": round(100.0 * float(correct[sel].mean()), 2) if sel.any() else None,
                       "n": int(sel.sum())}
    return {"per_family": table, "overall": round(100.0 * float(correct.mean()), 2),
            "n": int(len(correct))}


class ParseHead(torch.nn.Module):
    """Training-only auxiliary head on the CAM layer (not part of the saved model).

    A 1x1 convolution predicts, for every cell of the CAM grid, the (colour, shape) pair
    of the object whose centre lies in that cell (18 classes + "none") and the centre's
    (x, y) offset inside the cell.  Two centres never share a cell (objects keep more than
    one cell apart in x or y), so the targets are well defined.  This "scene-parsing" loss
    makes the CAM layer encode objects where they are, which speeds up CPU training a
    lot; the VQA tail still has to learn to read it.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.n_classes = len(scenes.COLOURS) * len(scenes.SHAPES) + 1
        self.conv = torch.nn.Conv2d(channels, self.n_classes + 2, 1)

    def loss(self, cam: torch.Tensor, objects: np.ndarray) -> torch.Tensor:
        """Auxiliary loss for CAM activations (S, C, G, G) of scenes with ``objects``
        rows (S, MAX_OBJECTS, 5) as in :class:`scenes.VQAArrays`."""
        out = self.conv(cam)
        S, _, G, _ = out.shape
        cell = scenes.IMAGE_SIZE // G
        target = torch.zeros(S, G, G, dtype=torch.long)
        s_idx, j_idx = np.nonzero(objects[:, :, 0] >= 0)
        obj = objects[s_idx, j_idx]
        gx, gy = obj[:, 2] // cell, obj[:, 3] // cell
        target[s_idx, gy, gx] = torch.from_numpy(1 + obj[:, 1] * len(scenes.SHAPES) + obj[:, 0])
        offset = torch.from_numpy((obj[:, 2:4] % cell + 0.5) / cell - 0.5).float()
        pred_offset = out[:, -2:][s_idx, :, gy, gx]
        return (F.cross_entropy(out[:, :self.n_classes], target)
                + 4.0 * F.smooth_l1_loss(pred_offset, offset, beta=0.1))


class PositionTied(torch.nn.Module):
    """Training-time reparametrisation of the image head's Linear weight.

    ``weight = free + shared`` repeated over the ``positions`` cells of the flattened
    CAM grid, where ``shared`` is (out, C) and ``free`` (out, C*positions) starts at zero.
    The function class is unchanged (any weight is reachable), but the shared part gets
    the summed gradient of all cells, so position-invariant read-outs (colour, shape,
    counts) are learnt an order of magnitude faster; the free part learns position-
    specific read-outs (relations).  Folded into a plain ``nn.Linear`` weight before
    saving (see :func:`fold_position_tied`).
    """

    def __init__(self, out_features: int, channels: int, positions: int, generator):
        super().__init__()
        self.positions = positions
        bound = 1.0 / math.sqrt(channels * positions)
        init = (torch.rand(out_features, channels, generator=generator) * 2 - 1) * bound
        self.shared = torch.nn.Parameter(init)

    def forward(self, free: torch.Tensor) -> torch.Tensor:
        return free + self.shared.repeat_interleave(self.positions, dim=1)


def tie_positions(model: VQANet, generator) -> torch.nn.Linear:
    """Register :class:`PositionTied` on ``model.image_head[1].weight`` (free part zeroed)."""
    linear = model.image_head[1]
    channels, size, _ = model.cam_shape
    with torch.no_grad():
        linear.weight.zero_()
    parametrize.register_parametrization(
        linear, "weight", PositionTied(linear.out_features, channels, size * size, generator))
    return linear


def fold_position_tied(linear: torch.nn.Linear) -> None:
    """Replace the parametrisation by the plain weight it currently computes."""
    parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)


def _train_epoch(model, parse_head, aux_weight, optimizer, scheduler, data, batch_scenes,
                 generator) -> tuple[float, float, float]:
    """One pass over ``data`` (scenes shuffled); returns (mean VQA loss, mean auxiliary
    loss, training accuracy %)."""
    model.train()
    # questions of a scene are contiguous in ``data``: starts[k]..starts[k+1]
    starts = np.searchsorted(data.scene_index, np.arange(len(data.images) + 1))
    order = torch.randperm(len(data.images), generator=generator).numpy()
    questions, answers = torch.from_numpy(data.questions), torch.from_numpy(data.answers)
    total_loss, total_aux, total_correct, count = 0.0, 0.0, 0, 0
    for b in range(0, len(order), batch_scenes):
        idx = order[b:b + batch_scenes]
        rows = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in idx])
        local = np.repeat(np.arange(len(idx)), starts[idx + 1] - starts[idx])
        cam = model.encoder(scenes.to_tensor(data.images[idx]))
        logits = model.answer(cam[torch.from_numpy(local)], model.encode_question(questions[rows]))
        target = answers[rows]
        loss = F.cross_entropy(logits, target)
        aux = parse_head.loss(cam, data.objects[idx]) if aux_weight else torch.zeros(())
        optimizer.zero_grad(set_to_none=True)
        (loss + aux_weight * aux).backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(rows)
        total_aux += aux.item() * len(idx)
        total_correct += int((logits.argmax(1) == target).sum())
        count += len(rows)
    return total_loss / count, total_aux / len(order), 100.0 * total_correct / count


def _source_digest() -> str:
    """sha256 (12 hex) of scenes.py + model.py, recorded for provenance only."""
    h = hashlib.sha256()
    for name in ("scenes.py", "model.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m camlib.vqa.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--scenes-per-epoch", type=int, default=8000)
    p.add_argument("--per-family", type=int, default=2, help="questions per family per scene")
    p.add_argument("--batch-scenes", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-scenes", type=int, default=2000)
    p.add_argument("--aux-weight", type=float, default=1.0,
                   help="weight of the training-only scene-parsing loss (see ParseHead)")
    p.add_argument("--tie-positions", type=int, default=1,
                   help="1: train the image head with the PositionTied reparametrisation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ASSET_DIR)
    p.add_argument("--hparams", type=json.loads, default={},
                   help="JSON dict overriding model hyper-parameters")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Train, evaluate, write weights + metadata; returns the metadata dict."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator().manual_seed(args.seed)
    seeds_per_epoch = args.scenes_per_epoch
    if (args.seed + 1) * args.epochs * seeds_per_epoch > TEST_SEED_BASE:
        raise ValueError("training scene seeds would reach the held-out range")
    hparams = {**DEFAULT_HPARAMS, **args.hparams}
    hparams["channels"] = list(hparams["channels"])
    model = build_model(hparams)
    tied_linear = tie_positions(model, generator) if args.tie_positions else None
    parse_head = ParseHead(model.cam_shape[0])
    params = list(model.parameters()) + list(parse_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * math.ceil(seeds_per_epoch / args.batch_scenes)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps,
                                                    pct_start=0.15)
    val = heldout_set(200)  # progress monitor only (a prefix of the final held-out set)
    t0 = time.time()
    for epoch in range(args.epochs):
        first = (args.seed * args.epochs + epoch) * seeds_per_epoch
        data = scenes.build_dataset(range(first, first + seeds_per_epoch),
                                    question_seed=args.seed * 1000 + epoch,
                                    per_family=args.per_family)
        loss, aux, acc = _train_epoch(model, parse_head, args.aux_weight, optimizer,
                                      scheduler, data, args.batch_scenes, generator)
        model.eval()
        v = accuracy_table(predict(model, val), val)
        fams = " ".join(f"{k}={x['accuracy']}" for k, x in v["per_family"].items())
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f} aux {aux:.4f} train {acc:.1f}% | "
              f"val {v['overall']}% ({fams}) | {time.time() - t0:.0f}s", flush=True)
    train_seconds = time.time() - t0
    if tied_linear is not None:
        fold_position_tied(tied_linear)

    model.eval()
    test = heldout_set(args.test_scenes)
    table = accuracy_table(predict(model, test), test)
    first300 = first300_accuracy(model)
    print(json.dumps(table, indent=1))
    print(f"held-out first {N_FIXED} questions: {first300}%")

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out / WEIGHTS_NAME)
    meta = {
        "name": "Shapes-VQA VQANet",
        "code_version": CODE_VERSION,
        "source_sha256_12": _source_digest(),
        "vocab": list(scenes.VOCAB),
        "answers": list(scenes.ANSWERS),
        "families": list(scenes.FAMILIES),
        "max_question_len": scenes.MAX_QUESTION_LEN,
        "hparams": hparams,
        "cam_layer": CAM_LAYER,
        "cam_shape": list(model.cam_shape),
        "accuracy": table,
        "first300_accuracy": first300,
        "test_seed_base": TEST_SEED_BASE,
        "test_question_seed": TEST_QUESTION_SEED,
        "test_scenes": args.test_scenes,
        "seed": args.seed,
        "train": {"epochs": args.epochs, "scenes_per_epoch": seeds_per_epoch,
                  "per_family": args.per_family, "batch_scenes": args.batch_scenes,
                  "lr": args.lr, "aux_weight": args.aux_weight,
                  "tie_positions": bool(args.tie_positions), "weight_decay": args.weight_decay,
                  "optimizer": "AdamW + OneCycleLR", "threads": args.threads,
                  "seconds": round(train_seconds, 1), "torch": torch.__version__},
        "command": "python -m camlib.vqa.train " + " ".join(shlex.quote(a) for a in
                                                            (sys.argv[1:] if argv is None else argv)),
    }
    (args.out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / WEIGHTS_NAME} and {args.out / META_NAME} "
          f"(training {train_seconds:.0f}s)")
    return meta


if __name__ == "__main__":
    main()
