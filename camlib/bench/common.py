"""What every benchmark sub-command shares: its options, the model and image set, the rows store
with resumption, the distributed shard and the final merge."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Callable, Iterator, Sequence

import torch

from camlib.bench import distributed
from camlib.bench.data import Record, load_index, select
from camlib.bench.report import RowStore, check_config, write_config

def paper_methods() -> list[str]:
    """The methods the paper compares in its Tables 3-5 (camlib.methods.paper_methods)."""
    from camlib.methods import paper_methods as paper

    return paper()


@dataclasses.dataclass(frozen=True)
class MethodRun:
    """One requested method with its options: ``label`` names its rows (``shapcam_100``)."""

    label: str
    key: str
    options: dict
    title: str


def method_runs(names: Sequence[str], options: dict) -> list[MethodRun]:
    """The runs of the requested methods, each with the ``options`` it declares (checked against its
    bounds; the others are not passed to it), without duplicate labels."""
    import camlib

    runs = []
    for name in names:
        method = camlib.get_method(name)
        mine = method.resolve_options({k: v for k, v in options.items() if any(o.name == k for o in method.options)})
        run = MethodRun(method.label(**mine), method.key, mine, method.label_title(**mine))
        if run.label not in [r.label for r in runs]:
            runs.append(run)
    if not runs:
        raise ValueError("no methods given")
    return runs


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """``--option NAME=VALUE`` (repeatable): a method option for every requested method that has it."""
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a method option (see 'camlib methods'), given to every requested method that has it; "
                             "repeatable, e.g. --option permutations=100")


def parse_options(items: Sequence[str]) -> dict:
    """``NAME=VALUE`` strings as {name: int, float or text}."""
    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--option wants NAME=VALUE, got {item!r}")
        value = value.strip()
        for kind in (int, float):
            try:
                value = kind(value)
                break
            except ValueError:
                continue
        options[name.strip()] = value
    return options


def add_common_arguments(parser: argparse.ArgumentParser, *, methods: Sequence[str] | None,
                         layer_help: str) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="folder with index.csv (imagenet-val-dev format: file,class_index,class_name,"
                             "xmin,ymin,xmax,ymax) and the images it lists")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (CSV + Markdown); re-running with the same folder resumes")
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="zoo model (default: %(default)s), or package.module:function returning a CamModel")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), 'none' (random weights, for tests) or a state-dict path")
    parser.add_argument("--layer", default=None, help=layer_help)
    parser.add_argument("--methods", nargs="*", default=list(methods) if methods is not None else [],
                        metavar="METHOD",
                        help=f"CAM methods (default: {' '.join(methods) if methods else 'none'}); "
                             "see 'python -m camlib methods'")
    parser.add_argument("--target", choices=("gt", "predicted"), default="gt",
                        help="class to explain and score: the ground-truth class_index of the index file "
                             "(default) or the model's predicted class")
    parser.add_argument("--n-images", type=int, default=None, metavar="N", help="number of images (default: all)")
    parser.add_argument("--seed", type=int, default=None,
                        help="image selection: without it the first N images of the index; with it the first N "
                             "of a random permutation drawn with this seed (nested for growing N)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: CUDA when available; cuda:LOCAL_RANK under torchrun)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B",
                        help="images per explain call (default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=64, metavar="C",
                        help="most images / tail inputs per network call inside the methods "
                             "(default: %(default)s)")
    parser.add_argument("--metrics-batch", type=int, default=None, metavar="M",
                        help="images per network call in the metrics (default: the device's fastest, "
                             "camlib.devices.network_batch: 4 on the CPU, 64 on a GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--metrics-memory-format", choices=("channels_last", "contiguous"), default="channels_last",
                        help=argparse.SUPPRESS)
    parser.add_argument("--dist-timeout", type=float, default=24 * 3600.0, help=argparse.SUPPRESS)


def parse_weights(text: str):
    return None if str(text).lower() == "none" else text


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def method_key(name: str) -> str:
    import camlib

    return camlib.get_method(name).key


def method_title(label: str) -> str:
    """Display name of a row's method label for a Markdown table (``shapcam_100`` ->
    ``SHAP-CAM (\\|Π\\|=100)``: the bars of |Π| escaped)."""
    from camlib.methods import METHODS

    if label in METHODS:
        return METHODS[label].title
    for key, method in sorted(METHODS.items(), key=lambda item: -len(item[0])):
        values = label[len(key) + 1:].split("_") if label.startswith(key + "_") else []
        if method.label_options and len(values) == len(method.label_options):
            return method.label_title(**dict(zip(method.label_options, values))).replace("|", "\\|")
    return label


class PixelSpaceNetwork(torch.nn.Module):
    """Pixel-space images in [0, 1] -> logits of a CamModel without gradients: its mean/std
    normalisation, then its network; with ``channels_last`` a channels-last copy of the network
    (on the CPU about 1.5x faster for depthwise convolutions; the same values up to float
    rounding). A module, so that peer libraries that want one (torchcam, Quantus) get the very
    network camlib's metrics use."""

    def __init__(self, model, channels_last: bool):
        super().__init__()
        import copy

        self.channels_last = channels_last
        self.network = copy.deepcopy(model.module).to(memory_format=torch.channels_last) if channels_last \
            else model.module
        self.register_buffer("mean", model.mean.detach().clone(), persistent=False)
        self.register_buffer("std", model.std.detach().clone(), persistent=False)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = (images01 - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.network(x)


@dataclasses.dataclass
class Run:
    """One invocation of a sub-command on one rank."""

    args: argparse.Namespace
    name: str
    env: distributed.DistEnv
    device: torch.device
    model: object
    layer: object  # camlib.LayerInfo
    records: list[Record]  # the run's images, in run order
    mine: list[Record]  # this rank's shard
    store: RowStore
    done: set
    config: dict
    started: float

    @property
    def out(self) -> pathlib.Path:
        return pathlib.Path(self.args.out)

    @property
    def metrics_batch(self) -> int:
        """Images per network call in the metrics: ``--metrics-batch`` or the device's fastest."""
        from camlib.devices import network_batch

        return self.args.metrics_batch or network_batch(self.device)

    def targets(self, records: Sequence[Record]):
        """Target per image: the ground-truth class index, or None (explain's predicted class)."""
        if self.args.target == "predicted":
            return None
        n_classes = len(self.model.class_names)
        for r in records:
            if not 0 <= r.class_index < n_classes:
                raise ValueError(f"{r.file}: class_index {r.class_index} is outside the model's {n_classes} classes")
        return [r.class_index for r in records]

    def logits_fn(self):
        """images01 -> logits for the metrics. On the CPU a channels-last copy of the network runs
        them (about 1.5x faster for depthwise convolutions; same values up to float rounding, the
        same for every row, and the methods themselves still run on the model as loaded)."""
        if self.device.type != "cpu" or self.args.metrics_memory_format != "channels_last" \
                or not hasattr(self.model, "module") or self.model.extra_inputs(1)[0]:
            return self.model.logits_fn()
        return PixelSpaceNetwork(self.model, channels_last=True)

    def progress_bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        label = f"{desc} [rank {self.env.rank}/{self.env.world_size}]" if self.env.enabled else desc
        return tqdm(total=total, desc=label, unit="row", dynamic_ncols=True,
                    disable=self.args.no_progress or not self.env.is_main)


def load_bench_model(name: str, device, weights):
    """A zoo model by name, or ``package.module:function`` -> ``function(device=..., weights=...)``
    returning a :class:`camlib.CamModel` (your own network; the tests use a tiny one)."""
    import camlib

    if ":" not in name:
        return camlib.load_model(name, device=device, weights=weights)
    import importlib

    module_name, _, function = name.partition(":")
    factory = getattr(importlib.import_module(module_name), function)
    return factory(device=device, weights=weights)


def resolve_layer(model, layer: str | None, prefer_nonlinear: bool):
    """The CAM layer: ``layer`` if given; else the model's default, or with ``prefer_nonlinear``
    the first preset layer whose tail is nonlinear (EfficientNet-Lite0: ``blocks.6``)."""
    if layer not in (None, "", "auto", "default"):
        return model.layer_info(layer)
    if prefer_nonlinear and layer != "default":
        for name in model.preset_layers:
            info = model.layer_info(name)
            if not info.linear_tail:
                return info
    return model.layer_info(None)


def start(args: argparse.Namespace, name: str, fields: Sequence[str], key: Sequence[str],
          config: dict, prefer_nonlinear: bool = False, optional: Sequence[str] = ()) -> Run:
    """Set up a run: process group, model, layer, images, shard; check/write the configuration;
    read the rows already done (every rank, before any rank appends). ``optional``: columns a CSV
    of an earlier version may lack (:class:`~camlib.bench.report.RowStore`)."""

    started = time.perf_counter()
    if args.batch_size < 1 or args.chunk_size < 1 or (args.metrics_batch is not None and args.metrics_batch < 1):
        raise ValueError("--batch-size, --chunk-size and --metrics-batch must be at least 1")
    env, device = distributed.setup(args.device, args.dist_timeout)
    torch.manual_seed(0)
    model = load_bench_model(args.model, device, parse_weights(args.weights))
    layer = resolve_layer(model, args.layer, prefer_nonlinear)
    records = select(load_index(args.data), args.n_images, args.seed)
    config = {"command": name, "model": args.model, "weights": str(args.weights), "layer": layer.name,
              "target": args.target, "data": str(pathlib.Path(args.data).resolve()), **config}
    out = pathlib.Path(args.out)
    store = RowStore(out, name, fields, key, optional)
    config_path = out / f"{name}.config.json"
    check_config(config_path, config)
    done = store.done()
    distributed.barrier(env)  # nobody appends before everyone has read
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(config_path, config)
    store.open(env.rank, env.enabled)
    mine = distributed.shard(records, env)
    if env.is_main:
        log(f"{name}: {args.model} at layer {layer.name} ({'linear' if layer.linear_tail else 'nonlinear'} tail), "
            f"{len(records)} images, target = {args.target}, device {device}"
            + (f", {env.world_size} ranks ({env.backend})" if env.enabled else ""))
    return Run(args=args, name=name, env=env, device=device, model=model, layer=layer, records=records,
               mine=mine, store=store, done=done, config=config, started=started)


def batches(records: Sequence[Record], size: int) -> Iterator[list[Record]]:
    for i in range(0, len(records), size):
        yield list(records[i:i + size])


def finish(run: Run, markdown: Callable[[Run, list[dict]], str]) -> str | None:
    """Close this rank's rows; after a barrier rank 0 merges all rows into the CSV and writes the
    Markdown computed from it. Returns the Markdown on rank 0."""
    run.store.close()
    distributed.barrier(run.env)
    text = None
    if run.env.is_main:
        rows = run.store.merge()
        text = markdown(run, rows)
        path = run.out / f"{run.name}.md"
        path.write_text(text, encoding="utf-8")
        log(f"{run.name}: {len(rows)} rows in {run.store.path}, table in {path} "
            f"({time.perf_counter() - run.started:.1f} s this invocation)")
    distributed.barrier(run.env)
    return text


def selected_rows(run: Run, rows: Sequence[dict]) -> list[dict]:
    """The rows of this run's images (the CSV may hold more from earlier, larger runs)."""
    files = {r.file for r in run.records}
    return [r for r in rows if r["image"] in files]


def command_line(argv: Sequence[str] | None, command: str) -> str:
    import shlex

    parts = ["python -m camlib.bench", command, *(shlex.quote(a) for a in (argv or []))]
    return " ".join(parts)
