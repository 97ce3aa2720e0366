"""Which environment variables change camlib's float32 results on this machine?

Runs a few representative computations once per environment, each in a fresh subprocess (the math
libraries read these variables when they load), and prints, for each forced path, the greatest
|difference| from the default path. A non-zero difference proves that the path really sums in
another order; .ci/run runs the tests marked ``numerics`` a second time under a combination of them
(NUMERICS_ENV there, shown last as "ci-numerics").

    python .ci/isa-probe.py            # all paths below (a few minutes)
    python .ci/isa-probe.py --only avx2-all,1-thread

The computations (models with seeded random weights, except the offline pretrained Lite0):
  resnet50 logits     ResNet50's forward on the sample image (oneDNN convolutions, MKL FC)
  resnet50 tail       its tail from layer4 (pool + FC) on those activations: the logit
  lite0 logits        EfficientNet-Lite0's forward (depthwise convolutions: ATen / oneDNN)
  vgg16 fc6 (1, 8)    VGG16's first FC layer, 25088 -> 4096, on 1 and 8 vectors (MKL gemv / gemm)
  numba clampsum/blockdot  camlib's compiled kernels on random data (fastmath reassociation)
  <method> tiny/r50   camlib.explain coefficients (Ablation-CAM, LIFT-CAM, SHAP-CAM: the engine's
                      fast backends, numba kernels included) on the tests' TinyNet and on ResNet50
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

# name -> variables added to the environment. "avx2-all" is what an AVX2-only CPU (an older
# AMD EPYC, most laptops) does by itself; "numerics" is .ci/run's second pass.
PATHS = {
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-sse4_2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "numba-haswell": {"NUMBA_CPU_NAME": "haswell"},
    "numba-generic": {"NUMBA_CPU_NAME": "generic"},
    "1-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "avx2-all": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                 "ATEN_CPU_CAPABILITY": "avx2", "NUMBA_CPU_NAME": "haswell"},
    "avx2-scalar-1": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                      "ATEN_CPU_CAPABILITY": "default", "NUMBA_CPU_NAME": "haswell",
                      "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "sse-scalar-1": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41",
                     "ATEN_CPU_CAPABILITY": "default", "NUMBA_CPU_NAME": "generic",
                     "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def ci_env() -> dict[str, str]:
    """The NUMERICS_ENV line of .ci/run (the second pass), parsed: VAR=value words."""
    for line in (REPO / ".ci" / "run").read_text().splitlines():
        if line.startswith("NUMERICS_ENV="):
            return dict(word.split("=", 1) for word in line.split("=", 1)[1].strip("\"'").split())
    return {}


def compute(out: str) -> None:
    """The computations, in this process's environment, saved to ``out`` (name -> float64 tensor)."""
    sys.path.insert(0, str(REPO))
    import torch
    import torch.nn as nn

    import camlib
    from camlib.samples import load_sample
    from tests.conftest import tiny_model

    results = {}
    chelsea = load_sample("chelsea")[0]
    torch.manual_seed(0)
    r50 = camlib.load_model("resnet50", device="cpu", weights=None)
    lift = camlib.explain(r50, chelsea, "liftcam")
    lite0 = camlib.load_model("efficientnet_lite0", device="cpu")
    results["lite0 logits"] = camlib.explain(lite0, chelsea, "gradcam").logits
    with torch.inference_mode():
        results["resnet50 logits"] = lift.logits
        results["resnet50 tail"] = r50.split(lift.layer).tail(lift.activations[None])[0, int(lift.target)]
        torch.manual_seed(0)
        fc6 = nn.Linear(25088, 4096)
        v = torch.rand(8, 25088)
        results["vgg16 fc6 (1)"] = fc6(v[:1])
        results["vgg16 fc6 (8)"] = fc6(v)
    tiny = tiny_model()
    torch.manual_seed(0)
    xt = torch.rand(7, 3, 16, 16)
    for method, options in (("ablationcam", {}), ("liftcam", {}), ("shapcam", {"permutations": 3})):
        results[f"{method} tiny"] = camlib.explain(tiny, xt, method, target=[i % 3 for i in range(7)],
                                                   **options).coefficients
    from camlib.engine.kernels import blockdot, clampsum
    g = torch.Generator().manual_seed(0)
    d = torch.randn(64, 5000, generator=g) * 0.1
    orders = torch.stack([torch.randperm(64, generator=g) for _ in range(16)])
    results["numba clampsum"] = clampsum.prefix_readout(torch.randn(5000, generator=g), d, orders,
                                                        torch.randn(5000, generator=g), 0.0, 6.0)
    results["numba blockdot"] = blockdot.block_dots(torch.randn(300, 64 * 49, generator=g),
                                                    torch.randn(2, 64, 49, generator=g))
    results["ablationcam r50"] = camlib.explain(r50, chelsea, "ablationcam").coefficients
    results["liftcam r50"] = lift.coefficients
    torch.save({k: v.detach().double() for k, v in results.items()}, out)


def run(env_extra: dict[str, str], out: str) -> None:
    env = {**os.environ, **env_extra}
    subprocess.run([sys.executable, __file__, "--compute", out], env=env, check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compute", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="comma-separated path names (default: all, and .ci/run's)")
    args = parser.parse_args()
    if args.compute:
        return compute(args.compute)
    import torch

    paths = dict(PATHS)
    if ci_env():
        paths["ci-numerics"] = ci_env()
    if args.only:
        paths = {k: v for k, v in paths.items() if k in args.only.split(",")}
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads by default")
    with tempfile.TemporaryDirectory() as tmp:
        run({}, f"{tmp}/default.pt")
        base = torch.load(f"{tmp}/default.pt", weights_only=True)
        rows = {}
        for i, (name, extra) in enumerate(paths.items()):
            run(extra, f"{tmp}/{i}.pt")
            got = torch.load(f"{tmp}/{i}.pt", weights_only=True)
            rows[name] = {k: float((got[k] - base[k]).abs().max()) for k in base}
    names = list(rows)
    print("max |forced - default| of each computation, per forced path (0: the same bits)")
    print(f"{'':<20}{'scale':>10}" + "".join(f"{n[:13]:>14}" for n in names))
    for k, v in base.items():
        print(f"{k:<20}{float(v.abs().max()):>10.3g}" + "".join(f"{rows[n][k]:>14.3g}" for n in names))
    print(f"{'changed':<30}" + "".join(f"{sum(d > 0 for d in rows[n].values()):>11}/{len(base):<2}" for n in names))
    for name, extra in paths.items():
        print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in extra.items()))


if __name__ == "__main__":
    main()
