"""The speed targets set by the issues that asked for the fast paths, judged against a run's figures."""

from __future__ import annotations

from camlib.methods import METHODS, Cost

# A single-pass method (one forward and one backward pass: ``Cost.ONE_PASS``) costs at most this
# many plain forward passes.
ONE_PASS_BUDGET = 1.15
# camlib's Ablation-CAM at least this many times faster than pytorch-grad-cam's.
ABLATION_SPEEDUP = {"efficientnet_lite0": 100, "vgg16": 20}
SCORE_SPEEDUP = 1.5  # camlib's Score-CAM against pytorch-grad-cam's; and at most half its peak memory
# Fast SHAP-CAM prefixes at least this many times faster per ordering than the naive ones.
SHAP_SPEEDUP = {("vgg16", "features.29"): 5, ("efficientnet_lite0", "blocks"): 20,
                ("efficientnet_lite0", "blocks.6"): 20}
SHAP_100_SECONDS = 5.0  # SHAP-CAM_100 at Lite0 blocks.6, end to end


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets against the measurements (rows: target, measured, met)."""
    one_pass = [k for k, m in METHODS.items() if m.cost is Cost.ONE_PASS]
    rows = []
    for model in results["models"]:
        name, sec = model["name"], model["seconds"]
        fwd = sec.get(("torch", "forward"))
        for method in one_pass:
            t = sec.get(("camlib", method))
            if t and fwd:
                rows.append({"target": f"{name} {method} ≤ {ONE_PASS_BUDGET:g}× forward",
                             "measured": f"{t / fwd:.2f}×", "met": t / fwd <= ONE_PASS_BUDGET})
        ours, theirs = sec.get(("camlib", "ablationcam")), sec.get(("pgc", "ablationcam"))
        need = ABLATION_SPEEDUP.get(name)
        if ours and theirs and need:
            rows.append({"target": f"{name} Ablation-CAM ≥ {need}× faster than pgc",
                         "measured": f"{theirs / ours:.0f}×", "met": theirs / ours >= need})
        ours, theirs = sec.get(("camlib", "scorecam")), sec.get(("pgc", "scorecam"))
        if ours and theirs:
            rows.append({"target": f"{name} Score-CAM ≥ {SCORE_SPEEDUP:g}× faster than pgc",
                         "measured": f"{theirs / ours:.2f}×", "met": theirs / ours >= SCORE_SPEEDUP})
            mem = model.get("memory", {})
            mo, mt = mem.get(("camlib", "scorecam")), mem.get(("pgc", "scorecam"))
            if mo is not None and mt:
                rows.append({"target": f"{name} Score-CAM peak memory ≤ ½ pgc's",
                             "measured": f"{mo / 2**20:.0f} vs {mt / 2**20:.0f} MiB", "met": mo <= mt / 2})
        for row in model.get("batches", []):
            rows.append({"target": f"{name} {row['method']}: batch of {row['images']} cheaper per image",
                         "measured": f"{row['ratio']:.2f}×", "met": row["ratio"] < 1})
        for row in model.get("shap", []):
            need = SHAP_SPEEDUP.get((name, row["layer"]))
            if need:
                rows.append({"target": f"{name} {row['layer']} SHAP-CAM ≥ {need}× faster per ordering than naive",
                             "measured": f"{row['speedup']:.1f}×", "met": row["speedup"] >= need})
            if name == "efficientnet_lite0" and row["layer"] in ("blocks", "blocks.6") and 100 in row["shapcam"]:
                t = row["shapcam"][100]
                rows.append({"target": f"{name} blocks.6 SHAP-CAM_100 < {SHAP_100_SECONDS:g} s",
                             "measured": f"{t:.2f} s", "met": t < SHAP_100_SECONDS})
    return rows
