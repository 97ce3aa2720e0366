"""The speed benchmark (camlib.bench.speed): the CLI end to end on a tiny configuration, and the
coefficient-agreement checker. No timing assertions: timings are machine- and load-dependent."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("pytorch_grad_cam")

from camlib.bench import speed  # noqa: E402


def test_speed_cli_writes_markdown(tmp_path):
    out, raw = tmp_path / "speed.md", tmp_path / "speed.json"
    code = speed.main(["--models", "resnet18", "--methods", "gradcam", "xgradcam", "--libraries", "camlib", "pgc",
                       "--repeats", "1", "--batch", "2", "--batch-repeats", "1", "--device", "cpu",
                       "--out", str(out), "--json", str(raw)])
    assert code == 0
    text = out.read_text()
    assert "| model | layer | method | library |" in text
    for cell in ("| resnet18 | layer4 | forward |", "| resnet18 | layer4 | gradcam | camlib |",
                 "| resnet18 | layer4 | xgradcam | pytorch-grad-cam |"):
        assert cell in text
    assert "Machine:" in text and "torch " + torch.__version__ in text
    assert "### Coefficient agreement" in text and "### Batches" in text and "### Targets" in text
    results = json.loads(raw.read_text())
    model = results["models"][0]
    assert set(model["seconds"]) >= {"torch/forward", "camlib/gradcam", "pgc/gradcam", "camlib/xgradcam"}
    assert all(t > 0 for t in model["seconds"].values())
    # memory column: one fresh subprocess per case, each answered
    assert set(model["memory"]) == set(model["seconds"])
    assert all(isinstance(b, int) and b >= 0 for b in model["memory"].values())
    assert all(r["ok"] for r in model["agreement"])


def test_agreement_gradcam_pgc_resnet18(resnet18):
    rows = speed.check_agreement(resnet18, methods=("gradcam",), libraries=("pgc",))
    assert len(rows) == 1
    row = rows[0]
    assert (row["method"], row["peer"], row["coincide"]) == ("gradcam", "pgc", True)
    assert row["max_rel"] < 1e-4 and row["max_abs"] < 1e-6
    assert row["ok"]


def test_agreement_detects_a_difference(resnet18):
    """The check is not vacuous: coefficients that differ give a large relative difference."""
    a = torch.tensor([1.0, -2.0, 0.5])
    assert speed.compare(a, a) == (0.0, 0.0)
    diff, rel = speed.compare(a, a + torch.tensor([0.0, 0.2, 0.0]))
    assert diff == pytest.approx(0.2) and rel == pytest.approx(0.1)
    with pytest.raises(ValueError):
        speed.compare(a, a[:2])


def test_peak_memory_sees_torch_allocations():
    with speed.PeakMemory(torch.device("cpu")) as peak:
        x = torch.ones(64, 1024, 1024)  # 256 MiB, touched
        del x
    assert peak.peak > 200 * 2**20


def test_time_shap_rows_at_lite0_inner_block():
    from camlib.engine.kernels import clampsum

    s = speed.load_subject("efficientnet_lite0", "blocks.6")
    logs = []
    row = speed.time_shap(s, "blocks.6", repeats=1, permutation_counts=[2], batch_size=64, log=logs.append)
    assert row["maps"] == 320 and not row["linear"] and row["group"] == 16
    assert row["kernel"] == clampsum.available()
    assert row["max_diff"] < 1e-3  # fast (grouped and alone) == naive on the same orderings
    assert row["naive"] > 0 and row["fast"] > 0 and row["fast_single"] > 0 and row["shapcam"][2] > 0
    assert "groups of 16" in logs[0]


def test_default_methods_come_from_the_method_metadata():
    """The default set: the paper's methods, every method a peer implements and SHAP-CAM, cheapest
    cost class first; nothing in it is spelled out by the benchmark."""
    from camlib.methods import METHODS, Cost

    chosen = set(speed.DEFAULT_METHODS)
    assert {k for k, m in METHODS.items() if m.paper} <= chosen
    assert {k for methods in speed.PEER_METHODS.values() for k in methods} <= chosen
    assert "shapcam" in chosen and "cam" not in chosen  # CAM: no peer, not in the paper's tables
    costs = [list(Cost).index(METHODS[k].cost) for k in speed.DEFAULT_METHODS]
    assert costs == sorted(costs)
    assert speed.method_options("shapcam", permutations=3, samples=7) == {"permutations": 3}
    assert speed.method_options("gradcam", permutations=3) == {}


def test_slow_cases_follow_the_cost_classes(resnet18):
    """Cases with one whole-network pass per map run --slow-repeats times without a warm-up: camlib's
    Score-CAM (network passes) and the peers' per-map methods; camlib's Ablation-CAM and SHAP-CAM are
    tail evaluations, the single-pass methods one pass."""
    from camlib.bench.speed.subject import subject_of

    cases = speed.build_cases(subject_of(resnet18), speed.DEFAULT_METHODS, speed.LIBRARIES)
    assert {c.key for c in cases if c.slow} == {("camlib", "scorecam"), ("pgc", "scorecam"),
                                                  ("torchcam", "scorecam"), ("pgc", "ablationcam")}
    keys = {c.key for c in cases}
    assert ("captum", "liftcam") in keys and ("camlib", "shapcam") in keys
    assert not any(library != "camlib" and method == "shapcam" for library, method in keys)


def test_methods_without_a_peer_are_timed_by_camlib_alone(tmp_path):
    """CAM (at a linear tail) and SHAP-CAM have no peer: the run times camlib's explain for them, its
    note names the backends from Explanation.info and the options given, and no peer row appears."""
    raw = tmp_path / "speed.json"
    code = speed.main(["--models", "resnet18", "--layers", "resnet18=layer4", "--methods", "cam", "SHAP-CAM",
                       "--libraries", "camlib", "pgc", "torchcam", "captum", "--repeats", "1", "--batch", "2",
                       "--batch-repeats", "1", "--shap-repeats", "0", "--no-memory", "--permutations", "3",
                       "--device", "cpu", "--json", str(raw)])
    assert code == 0
    model = json.loads(raw.read_text())["models"][0]
    assert model["order"] == [["torch", "forward"], ["camlib", "cam"], ["camlib", "shapcam"]]
    assert set(model["seconds"]) == {"torch/forward", "camlib/cam", "camlib/shapcam"}
    assert model["notes"]["camlib/cam"] == "gradient sums: autograd"
    assert model["notes"]["camlib/shapcam"].startswith("coalition game: ")
    assert model["notes"]["camlib/shapcam"].endswith("; permutations = 3")
    assert model["agreement"] == []
    assert [r["method"] for r in model["batches"]] == ["cam", "shapcam"]


def test_a_method_that_does_not_apply_at_the_layer_is_reported(tmp_path, capsys):
    """CAM at a nonlinear tail (ResNet18 layer3): its case fails with the method's message in the note,
    the batch section skips it and the run completes; an unknown method is a usage error."""
    out = tmp_path / "speed.md"
    code = speed.main(["--models", "resnet18", "--layers", "resnet18=layer3", "--methods", "cam",
                       "--libraries", "camlib", "--repeats", "1", "--batch", "2", "--shap-repeats", "0",
                       "--no-memory", "--device", "cpu", "--out", str(out)])
    assert code == 0
    row = [line for line in out.read_text().splitlines() if line.startswith("| resnet18 | layer3 | cam |")]
    assert len(row) == 1 and "| – | – |" in row[0] and "failed: ValueError: CAM needs a linear" in row[0]
    assert "### Batches" not in out.read_text()
    with pytest.raises(SystemExit) as exc:
        speed.main(["--methods", "no-such-method"])
    assert exc.value.code == 2 and "unknown method 'no-such-method'" in capsys.readouterr().err
