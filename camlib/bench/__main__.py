"""``python -m camlib.bench SUBCOMMAND [options]``: dispatch to a sub-command, imported lazily."""

from __future__ import annotations

import importlib
import inspect
import sys

# name -> (module, function, one-line help)
COMMANDS = {
    "faithfulness": ("camlib.bench.faithfulness", "main",
                     "IC/AD/ADD, insertion/deletion AUC and pointing game per method (Tables 3-5)"),
    "shap-agreement": ("camlib.bench.shap", "main_agreement",
                       "cosine similarity of each method's coefficients to SHAP-CAM with many orderings (Table 2)"),
    "shap-table1": ("camlib.bench.shap", "main_table1",
                    "IC/AD/ADD of SHAP-CAM_1/10/100 averaged over seeds (Table 1)"),
    "speed": ("camlib.bench.speed", "main", "timing of the methods"),
    "metric-speed": ("camlib.bench.metric_speed", "main",
                     "the metric suite's throughput, before/after batching and against torchcam and Quantus"),
    "vqa": ("camlib.bench.vqa", "main",
            "VQA: IC/AD/ADD with the question fixed, pointing game on exact evidence, cosine to SHAP-CAM (Table 6)"),
    "device-check": ("camlib.bench.device_check", "main", "every method on an accelerator against the CPU"),
    "constant-maps": ("camlib.bench.constant_maps", "main",
                      "why maps are all zero: the sign of α·A, the tail's constants F^c(0), per image and method"),
}


def usage() -> str:
    lines = ["usage: python -m camlib.bench SUBCOMMAND [options]   (SUBCOMMAND --help for its options)", "",
             "sub-commands:"]
    lines += [f"  {name:16s} {info[2]}" for name, info in COMMANDS.items()]
    lines += ["", "Distributed: torchrun --nproc-per-node N -m camlib.bench SUBCOMMAND [options]"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown sub-command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"error: the {name!r} benchmark ({module_name}) is not installed in this checkout", file=sys.stderr)
        return 2
    fn = getattr(module, function)
    try:
        takes_argv = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes_argv = True
    if takes_argv:
        return int(fn(rest) or 0)
    sys.argv = [f"python -m camlib.bench {name}", *rest]
    return int(fn() or 0)


if __name__ == "__main__":
    sys.exit(main())
