"""``python -m camlib.bench metric-speed``: the cost of camlib's metric suite, before and after
batching, against torchcam and Quantus on the same maps, in one run.

The saliency maps are computed once, with camlib (``--methods`` at ``--layer``, target = the
ground-truth class), and the very same maps, images, targets and network are given to every case:
the network is :class:`camlib.bench.common.PixelSpaceNetwork` (the model's normalisation, then a
channels-last copy of its network on the CPU), so every library masks in pixel space and removed
pixels are black (0), camlib's convention (docs/METRICS.md). A row is one (image, method) pair.

Cases (each timed ``--repeats`` times, the cases interleaved in an order rotated per repetition,
the median reported):

* ``camlib score_maps``: the whole suite of :mod:`camlib.bench.faithfulness` (IC / AD / ADD and
  insertion / deletion on ``--steps`` thresholds) for all methods at once, as the benchmark runs it
  now: x once per image, each derived image once, ``--metrics-batch`` images per network call
  (also at every size in ``--batches``);
* ``camlib per method``: the same values from ``confidence_scores`` + ``insertion_deletion`` called
  per method, at the network batch and at 64 (the benchmark's scoring before: ``--chunk-size`` 64);
* IC / AD: ``torchcam.metrics.ClassificationMetric`` (fed the maps through a stand-in CAM
  extractor) against camlib's ``confidence_scores``;
* insertion / deletion on ``--peer-steps`` thresholds: ``torchcam.metrics.DeletionInsertionMetric``
  and Quantus' ``PixelFlipping`` (deletion only: Quantus 0.6 has no insertion; skipped when Quantus
  is not installed) against camlib's ``insertion_deletion``. The default 50 thresholds (49
  intervals of 1024 pixels on 224 x 224) is the grid nearest the paper's 41 that all three
  libraries evaluate exactly: Quantus needs a whole number of features per step, torchcam steps
  ceil(n / intervals) pixels;
* ``forward``: plain network passes over the images at the network batch; with it the floor
  ``85 x`` (its time per image) of the suite, the brief's count of 41 + 41 + 3 passes per row.

``network images / row`` is counted by the network itself during the timed run. Agreement: the
peers' numbers against camlib's where the definitions coincide (same grid, same masking), and where
they differ by definition, said so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import statistics
import sys
import time
from typing import Callable, Sequence

import torch

from camlib.bench import common

NAME = "metric-speed"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m camlib.bench {NAME}",
                                description="camlib's metric suite against torchcam and Quantus on the same maps.")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with index.csv (imagenet-val-dev format)")
    p.add_argument("--model", default="efficientnet_lite0", help="zoo model or package.module:function")
    p.add_argument("--weights", default="default", help="'default', 'none' (random) or a state-dict path")
    p.add_argument("--layer", default=None, help="CAM layer (default: the model's)")
    p.add_argument("--methods", nargs="+", default=["gradcam", "liftcam"], metavar="METHOD")
    p.add_argument("--n-images", type=int, default=8, metavar="N")
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=41, help="camlib suite's thresholds (default: the paper's 41)")
    p.add_argument("--peer-steps", type=int, default=50,
                   help="thresholds of the insertion/deletion comparison with the peers (default 50, see above)")
    p.add_argument("--metrics-batch", type=int, default=None, metavar="M",
                   help="images per network call for every case (default: the device's fastest)")
    p.add_argument("--batches", type=int, nargs="*", default=[], metavar="M",
                   help="also time camlib score_maps at these batch sizes")
    p.add_argument("--forward-images", type=int, default=64, help="images of the plain forward timing")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-peers", action="store_true", help="camlib's cases only")
    p.add_argument("--out", default=None, help="Markdown file to write (also printed)")
    return p


class GivenMaps:
    """A stand-in torchcam CAM extractor that returns given saliency maps, so that torchcam's
    metrics score exactly camlib's maps (``maps``: the (B, H, W) maps of the images of the next
    ``update`` call)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.maps: torch.Tensor | None = None

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


class Counter(torch.nn.Module):
    """The network, counting the images it is given."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network, self.images = network, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.shape[0])
        return self.network(x)


# ------------------------------------------------------------------------------------------------
# the cases: each takes (net, images, maps, batch) and returns what it computed
# maps: list of (label, saliency (B, H, W), target (B,))
# ------------------------------------------------------------------------------------------------


def camlib_suite(net, images, maps, batch: int, steps: int):
    from camlib import metrics

    index = torch.arange(images.shape[0]).repeat(len(maps))
    return metrics.score_maps(net, images, torch.cat([s for _, s, _ in maps]), torch.cat([t for _, _, t in maps]),
                              index, steps=steps, batch_size=batch)


def camlib_per_method(net, images, maps, batch: int, steps: int):
    from camlib import metrics

    return [(metrics.confidence_scores(net, images, s, t, batch_size=batch),
             metrics.insertion_deletion(net, images, s, t, steps=steps, batch_size=batch)) for _, s, t in maps]


def camlib_confidence(net, images, maps, batch: int):
    from camlib import metrics

    return {label: metrics.confidence_scores(net, images, s, t, batch_size=batch) for label, s, t in maps}


def camlib_insertion_deletion(net, images, maps, batch: int, steps: int):
    from camlib import metrics

    return {label: metrics.insertion_deletion(net, images, s, t, steps=steps, batch_size=batch)
            for label, s, t in maps}


def torchcam_ic_ad(net, images, maps, batch: int):
    """torchcam's ClassificationMetric per method, ``batch`` images per update: Y and O (2 passes)."""
    from torchcam.metrics import ClassificationMetric

    out = {}
    for label, s, t in maps:
        extractor = GivenMaps(net)
        metric = ClassificationMetric(extractor, functools.partial(torch.softmax, dim=-1))
        for start in range(0, images.shape[0], batch):
            extractor.maps = s[start:start + batch]
            metric.update(images[start:start + batch], class_idx=t[start:start + batch].tolist())
        out[label] = metric.summary()
    return out


def torchcam_insertion_deletion(net, images, maps, batch: int, steps: int):
    """torchcam's DeletionInsertionMetric per method on ``steps - 1`` intervals, ``batch`` images per
    update and per network call."""
    from torchcam.metrics import DeletionInsertionMetric

    out = {}
    for label, s, t in maps:
        extractor = GivenMaps(net)
        metric = DeletionInsertionMetric(extractor, functools.partial(torch.softmax, dim=-1), steps=steps - 1,
                                         batch_size=batch)
        for start in range(0, images.shape[0], batch):
            extractor.maps = s[start:start + batch]
            metric.update(images[start:start + batch], class_idx=t[start:start + batch].tolist())
        out[label] = metric.summary()
    return out


def quantus_steps(images: torch.Tensor, steps: int) -> int | None:
    """Quantus' ``features_in_step`` for camlib's grid of ``steps - 1`` intervals, or None.

    PixelFlipping ranks the C·H·W features of the map broadcast over the channels and removes
    ``features_in_step`` of them per step, which must divide H·W. A whole pixel per step would need
    3 | H·W (224² = 50176 is not); so each step removes H·W / (steps - 1) features, a third of an
    interval's pixels, and after every third step whole intervals are gone: curve point
    ``3 j - 1`` is camlib's ``del(δ_j)`` (3 (steps - 1) network passes per row instead of steps - 1).
    """
    n_pixels = images.shape[-2] * images.shape[-1]
    return n_pixels // (steps - 1) if n_pixels % (steps - 1) == 0 else None


def quantus_deletion(net, images, maps, batch: int, steps: int, tie_broken: bool = False):
    """Quantus' PixelFlipping per method: the deletion curve after each of ``steps - 1`` steps, black
    (0.0) baseline, maps neither normalised nor made absolute. ``tie_broken``: feed the maps'
    camlib ranking (1 - rank / n, no ties) instead of the maps (for the agreement check only)."""
    import numpy as np
    import quantus

    from camlib.metrics import _pixel_ranks

    out = {}
    for label, s, t in maps:
        attributions = s
        if tie_broken:
            attributions = 1.0 - _pixel_ranks(s).double().view_as(s) / s[0].numel()
        metric = quantus.PixelFlipping(features_in_step=quantus_steps(images, steps), perturb_baseline=0.0,
                                       normalise=False, abs=False, disable_warnings=True, display_progressbar=False)
        try:
            curves = metric(model=net, x_batch=images.cpu().numpy(), y_batch=t.cpu().numpy(),
                            a_batch=attributions[:, None].cpu().numpy(), channel_first=True, softmax=True,
                            device=str(images.device), batch_size=batch)
        except AssertionError as exc:  # e.g. "The elements in the attribution vector are all equal to zero"
            out[label] = str(exc).split(".")[0]
            continue
        out[label] = torch.from_numpy(np.asarray(curves, dtype=np.float64))
    return out


def forward(net, images, batch: int, n: int):
    from camlib.devices import network_input

    x = images.repeat((n + images.shape[0] - 1) // images.shape[0], 1, 1, 1)[:n]
    for start in range(0, n, batch):
        net(network_input(x[start:start + batch]))


# ------------------------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> str:
    import camlib
    from camlib.bench.data import load_batch, load_index, select
    from camlib.devices import network_batch, resolve_device

    args = parser().parse_args(argv)
    if args.steps < 2 or args.peer_steps < 2 or args.repeats < 1 or args.n_images < 1:
        raise ValueError("--steps and --peer-steps must be at least 2, --repeats and --n-images at least 1")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = [os.getloadavg()]
    model = common.load_bench_model(args.model, device, common.parse_weights(args.weights))
    layer = common.resolve_layer(model, args.layer, prefer_nonlinear=False)
    records = select(load_index(args.data), args.n_images)
    images, _ = load_batch(args.data, records, model.input_size)
    images = images.to(device)
    target = torch.tensor([r.class_index for r in records], device=device)
    maps, constant = [], {}
    for name in args.methods:
        exp = camlib.explain(model, images, name, layer=layer.name, target=target.tolist())
        maps.append((exp.method, exp.saliency, exp.target))
        constant[exp.method] = int(exp.constant.sum())
    batch = args.metrics_batch or network_batch(device)
    net = Counter(common.PixelSpaceNetwork(model, channels_last=device.type == "cpu")).eval()
    rows = images.shape[0] * len(maps)

    cases: dict[str, tuple[str, Callable]] = {
        "camlib score_maps": ("suite", lambda: camlib_suite(net, images, maps, batch, args.steps)),
        "camlib per method": ("suite", lambda: camlib_per_method(net, images, maps, batch, args.steps)),
        "camlib per method, batch 64": ("suite", lambda: camlib_per_method(net, images, maps, 64, args.steps)),
    }
    for b in args.batches:
        if b != batch:
            cases[f"camlib score_maps, batch {b}"] = ("suite", lambda b=b: camlib_suite(net, images, maps, b,
                                                                                         args.steps))
    cases["forward"] = ("forward", lambda: forward(net, images, batch, args.forward_images))
    quantus_ok = _has("quantus") and quantus_steps(images, args.peer_steps) is not None
    if not args.no_peers:
        cases.update({
            "camlib confidence_scores": ("ic/ad", lambda: camlib_confidence(net, images, maps, batch)),
            "torchcam ClassificationMetric": ("ic/ad", lambda: torchcam_ic_ad(net, images, maps, batch)),
            "camlib insertion_deletion": ("ins/del", lambda: camlib_insertion_deletion(net, images, maps, batch,
                                                                                       args.peer_steps)),
            f"camlib score_maps, {args.peer_steps} thr.": ("peer suite", lambda: camlib_suite(
                net, images, maps, batch, args.peer_steps)),
            "torchcam DeletionInsertionMetric": ("ins/del", lambda: torchcam_insertion_deletion(
                net, images, maps, batch, args.peer_steps)),
        })
        if quantus_ok:
            cases["Quantus PixelFlipping"] = ("ins/del", lambda: quantus_deletion(net, images, maps, batch,
                                                                                  args.peer_steps))

    seconds = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    per_row, results = {}, {}
    names = list(cases)
    for rep in range(args.repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            net.images = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = cases[name][1]()
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            per_row[name] = net.images / (args.forward_images if name == "forward" else rows)
            common.log(f"{NAME}: repetition {rep + 1}/{args.repeats}: {name} {seconds[name][-1]:.2f} s "
                       f"(load {os.getloadavg()[0]:.2f})")
    load.append(os.getloadavg())
    median = {name: statistics.median(v) for name, v in seconds.items()}
    median_cpu = {name: statistics.median(v) for name, v in cpu.items()}

    agreement = []
    if not args.no_peers:
        agreement = check_agreement(net, images, maps, batch, args.peer_steps, results, quantus_ok)
    text = markdown(args, model, layer, records, maps, constant, batch, rows, cases, median, median_cpu, per_row,
                    agreement, load, quantus_ok, argv)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return text


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check_agreement(net, images, maps, batch, steps, results, quantus_ok) -> list[list[str]]:
    """Rows (quantity, method, camlib, peer, |Δ|, why they agree or differ) from the timed runs' values."""
    out = []
    conf = results["camlib confidence_scores"]
    ins_del = results["camlib insertion_deletion"]
    for label, _, _ in maps:
        c, tc = conf[label], results["torchcam ClassificationMetric"][label]
        ad, ic = float(c.ad.mean()), float(c.ic.mean())
        out.append(["AD (mean)", label, f"{ad:.9f}", f"{tc['avg_drop']:.9f}", f"{abs(ad - tc['avg_drop']):.1e}",
                    "same definition; torchcam divides by Y + 1e-7, camlib by max(Y, 1e-12): "
                    "relative difference ~1e-7 / Y"])
        out.append(["IC (mean)", label, f"{ic:.4f}", f"{tc['conf_increase']:.4f}",
                    f"{abs(ic - tc['conf_increase']):.1e}", "same definition: 1[Y < O]"])
        tdi, cdi = results["torchcam DeletionInsertionMetric"][label], ins_del[label]
        for key, name in (("insertion_auc", "ins_auc"), ("deletion_auc", "del_auc")):
            ours = float(getattr(cdi, name).mean())
            out.append([f"{name} (mean)", label, f"{ours:.9f}", f"{tdi[key]:.9f}", f"{abs(ours - tdi[key]):.1e}",
                        f"same grid ({steps} thresholds, equal pixel counts), same tie order (stable, row-major), "
                        "same trapezoid over the kept fraction"])
        if quantus_ok:
            q = results["Quantus PixelFlipping"][label]
            ours = cdi.del_curve[:, 1:].double().cpu()
            if isinstance(q, str):
                out.append(["deletion curve", label, "—", "refused", "—", f"Quantus: {q}"])
                continue
            out.append(["deletion curve (max over δ, images)", label, "", "",
                        f"{float((ours - q[:, 2::3]).abs().max()):.1e}",
                        "same grid (every third Quantus step) and black baseline; Quantus ranks C·H·W features "
                        "with numpy's unstable sort, so tied pixels (the zero plateau of a ReLU'd map) go in "
                        "another order, channel by channel"])
            tied = quantus_deletion(net, images, [m for m in maps if m[0] == label], batch, steps, tie_broken=True)
            if not isinstance(tied[label], str):
                out.append(["deletion curve, ties broken as camlib", label, "", "",
                            f"{float((ours - tied[label][:, 2::3]).abs().max()):.1e}",
                            "the same maps' camlib ranking fed to Quantus (1 - rank / n): only float rounding left"])
    return out


def markdown(args, model, layer, records, maps, constant, batch, rows, cases, median, median_cpu, per_row,
             agreement, load, quantus_ok, argv) -> str:
    from camlib.bench.report import markdown_table

    forward_s = median["forward"] / args.forward_images
    forward_cpu = median_cpu["forward"] / args.forward_images
    peer_suite = f"camlib score_maps, {args.peer_steps} thr."
    reference = {"suite": "camlib score_maps", "ic/ad": "camlib confidence_scores",
                 "ins/del": "camlib insertion_deletion", "peer suite": peer_suite}
    what = {"suite": f"IC/AD/ADD + ins/del ({args.steps} thr.)", "ic/ad": "IC/AD(/ADD)",
            "ins/del": f"ins/del ({args.peer_steps} thr.)",
            "peer suite": f"IC/AD/ADD + ins/del ({args.peer_steps} thr.)"}
    timed = [(name, kind) for name, (kind, _) in cases.items() if kind != "forward"]
    if not args.no_peers:  # torchcam's whole suite: its two metrics one after the other
        both = "torchcam ClassificationMetric + DeletionInsertionMetric"
        for table in (median, median_cpu, per_row):
            table[both] = table["torchcam ClassificationMetric"] + table["torchcam DeletionInsertionMetric"]
        timed.append((both, "peer suite"))
    cells = []
    for name, kind in timed:
        s = median[name]
        label = "deletion only" if name == "Quantus PixelFlipping" else what[kind]
        if name.startswith("torchcam ClassificationMetric +"):
            label = f"IC/AD + ins/del ({args.peer_steps} thr.)"
        ratio = s / median[reference[kind]]
        per_image = 1000 * s / max(per_row[name] * rows, 1)
        cells.append([name, label, f"{per_row[name]:.1f}", f"{s:.2f}", f"{median_cpu[name]:.2f}", f"{rows / s:.2f}",
                      f"{ratio:.2f}×", f"{median_cpu[name] / median_cpu[reference[kind]]:.2f}×", f"{per_image:.1f}"])
    floor = 85 * forward_s * rows
    lines = [f"# Metric suite: {model.title}, layer `{layer.name}`", "",
             f"`{common.command_line(argv if argv is not None else sys.argv[1:], NAME)}`", "",
             f"{len(records)} images × {len(maps)} methods ({', '.join(m[0] for m in maps)}) = {rows} rows; "
             f"constant maps: {', '.join(f'{k} {v}/{len(records)}' for k, v in constant.items())}; "
             f"{batch} images per network call; median of {args.repeats} interleaved run(s).", "",
             markdown_table(["case", "computes", "network images / row", "s", "CPU s", "rows / s",
                             "× its camlib case", "× (CPU)", "ms / network image"], cells),
             "", "`s`: wall-clock seconds; `CPU s`: the process's CPU time (less sensitive to the machine's load "
             "than the wall clock, with `--threads 1` nearly blind to it); "
             f"`× its camlib case`: time over that of camlib's case computing the same quantities "
             f"({', '.join(reference.values())}; torchcam's two metrics together against camlib's suite on "
             f"their grid); `ms / network image`: the case's time over the images its "
             f"network ran (overhead beyond the passes shows here). Forward pass: {1000 * forward_s:.1f} ms "
             f"({1000 * forward_cpu:.1f} ms CPU) per image at batch {batch}; the floor of the suite, 85 passes per "
             f"row: {floor:.2f} s for {rows} rows ({rows / floor:.2f} rows / s); camlib score_maps takes "
             f"{median['camlib score_maps'] / floor:.2f}× the floor "
             f"({median_cpu['camlib score_maps'] / (85 * forward_cpu * rows):.2f}× in CPU time).", ""]
    if agreement:
        lines += ["## Agreement on the same maps", "",
                  markdown_table(["quantity", "method", "camlib", "peer", "|Δ|", "definitions"], agreement), ""]
    if not quantus_ok and not args.no_peers:
        lines += ["Quantus: not installed or no whole number of features per step on this grid; skipped.", ""]
    versions = ", ".join(f"{m} {_version(m)}" for m in ("torch", "torchcam", "quantus") if _version(m))
    lines += [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {versions}, "
              f"{torch.get_num_threads()} threads; load average {' / '.join(f'{v:.2f}' for v in load[0])} at the "
              f"start, {' / '.join(f'{v:.2f}' for v in load[-1])} at the end.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from camlib.bench.data import DataError

    try:
        text = run(argv)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
