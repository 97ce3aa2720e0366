"""appkit.compute: a view's single-pass maps come from one network pass (camlib.explain_many), with
the same numbers as each method alone; methods that cannot share fall back to one call each."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from PIL import Image

import appkit
import camlib
from appkit import compute
from appkit.service import result_of, service

WAIT = 60  # seconds: a bound on waits that must end (never a timing claim)


@pytest.fixture
def hold_workers():
    """hold_workers() occupies every worker of the process's service with a job that waits for its
    own gate; returns the gates (all opened when the test ends, whatever happened)."""
    opened = []

    def hold_all():
        n = service().workers
        gates, started = [threading.Event() for _ in range(n)], [threading.Event() for _ in range(n)]
        opened.extend(gates)
        token = uuid.uuid4().hex  # fresh keys: a finished hold job of an earlier test must not answer

        def hold(i):
            def run(progress):
                started[i].set()
                assert gates[i].wait(WAIT)
            return run

        # queued together: a job that starts while nothing else waits borrows the idle cores, and
        # an interactive one keeps them until it ends, so one at a time the second could not start
        service().submit_many([(("hold", token, i), hold(i), {}) for i in range(n)])
        assert all(s.wait(WAIT) for s in started)
        return gates

    yield hold_all
    for gate in opened:
        gate.set()


@pytest.fixture
def joint_calls(monkeypatch):
    """The method lists of every camlib.explain_many call the service makes during the test."""
    calls = []
    original = camlib.explain_many

    def recording(*args, **kw):
        calls.append(list(args[2]))
        return original(*args, **kw)

    monkeypatch.setattr(camlib, "explain_many", recording)
    return calls


def _image(seed: int) -> tuple[Image.Image, str]:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    return image, camlib.images.image_hash(image)


def test_a_views_single_pass_maps_share_one_pass(joint_calls, hold_workers):
    model = appkit.get_model("efficientnet_lite0")
    image, key = _image(0)
    methods = ["gradcam", "gradcampp", "xgradcam", "liftcam"]
    gates = hold_workers()
    jobs = [compute.submit_explanation("efficientnet_lite0", key, image, m, "bn2", 281) for m in methods]
    gates[0].set()  # one worker: it takes the first map, which takes the three others
    results = [result_of(job) for job in jobs]
    assert joint_calls == [methods]
    x = compute._tensor(image, model)
    # the same numbers as each method alone, in as many torch threads as the joint job used
    # (the conftest gives the next test its thread count back)
    import torch

    torch.set_num_threads(jobs[0].peak_threads)
    for m, res in zip(methods, results):
        alone = camlib.explain(model, x, m, layer="bn2", target=281)
        assert res["method"] == m and res["target"] == 281 and res["layer"] == "bn2"
        assert np.array_equal(res["coefficients"], alone.coefficients.numpy()), m
        assert np.array_equal(res["saliency"], np.clip(alone.saliency.numpy(), 0, 1)), m
    seconds = {job.seconds for job in jobs}
    assert all(s is not None and s >= 0 for s in seconds)


def test_a_failure_in_the_joint_pass_gives_each_method_its_own_outcome(hold_workers):
    """CAM needs a linear tail: at blocks.6 it fails with its message, and the maps that were
    claimed with it still get their results."""
    image, key = _image(1)
    gates = hold_workers()
    cam = compute.submit_explanation("efficientnet_lite0", key, image, "cam", "blocks.6", 3)
    grad = compute.submit_explanation("efficientnet_lite0", key, image, "gradcam", "blocks.6", 3)
    gates[0].set()
    with pytest.raises(ValueError, match="linear"):
        result_of(cam)
    assert cam.kept
    assert result_of(grad)["coefficients"].shape == (320,)


def test_plan_explanations_queues_a_views_single_pass_maps_together(joint_calls):
    """plan_explanations submits the single-pass maps under one hold of the service's lock, so even
    with free workers the first to start computes all of them in one call; slow methods are only
    planned (a button), options out of bounds come back as their ValueError."""
    image, key = _image(2)
    methods = ["gradcam", "gradcampp", "scorecam", "xgradcam", "liftcam", "shapcam"]
    plans = compute.plan_explanations("efficientnet_lite0", key, image, methods, "bn2", 5,
                                      {"shapcam": {"permutations": 0}})
    assert list(plans) == methods
    assert isinstance(plans["shapcam"], ValueError)
    assert plans["scorecam"][0] is None and plans["scorecam"][2] is not None  # a button with its expected time
    results = {m: result_of(plans[m][0]) for m in ("gradcam", "gradcampp", "xgradcam", "liftcam")}
    assert joint_calls == [["gradcam", "gradcampp", "xgradcam", "liftcam"]]
    assert all(r["target"] == 5 for r in results.values())


def test_a_views_activation_maps_come_from_the_same_pass(joint_calls, monkeypatch):
    """plan_explanations(with_activations=True) queues the view's activation maps with its maps:
    the job that computes the maps also ends the activation maps' job with the A of its own head
    pass (the job's own head pass never runs), the same A as a head pass alone; submit_activations
    then returns that job."""
    model = appkit.get_model("efficientnet_lite0")
    image, key = _image(3)
    own_passes = []
    original = compute._activations_job

    def recording(*args, **kw):
        k, run, keywords = original(*args, **kw)
        return k, (lambda progress: own_passes.append(k) or run(progress)), keywords

    monkeypatch.setattr(compute, "_activations_job", recording)
    methods = ["gradcam", "liftcam"]
    plans = compute.plan_explanations("efficientnet_lite0", key, image, methods, "bn2", 7, with_activations=True)
    maps_job = compute.submit_activations("efficientnet_lite0", key, image, "bn2")
    results = {m: result_of(plans[m][0]) for m in methods}
    maps = result_of(maps_job)
    assert joint_calls == [methods] and own_passes == []
    assert maps_job.claimer is plans["gradcam"][0]  # ended by the maps' job
    assert maps.dtype == np.float32 and maps.shape == (1280, 7, 7) and np.isfinite(maps).all()
    assert all(r["target"] == 7 for r in results.values())
    # a head pass alone (the job's own fn, as when no map job takes it) gives the same maps, to
    # float32 rounding: the same convolutions, with and without autograd recording
    alone = original("efficientnet_lite0", key, image, "bn2")[1](lambda fraction: None)
    scale = float(np.abs(alone).max())
    assert np.allclose(maps, alone, rtol=0, atol=64 * np.finfo(np.float32).eps * scale)


def test_activation_maps_left_by_a_failed_pass_run_alone(hold_workers):
    """CAM at blocks.6 fails (nonlinear tail): the activation maps queued with it are not lost,
    their job goes back to the queue and makes its own head pass."""
    image, key = _image(4)
    gates = hold_workers()
    plans = compute.plan_explanations("efficientnet_lite0", key, image, ["cam"], "blocks.6", 2, with_activations=True)
    maps_job = compute.submit_activations("efficientnet_lite0", key, image, "blocks.6")
    gates[0].set()
    with pytest.raises(ValueError, match="linear"):
        result_of(plans["cam"][0])
    assert result_of(maps_job).shape == (320, 7, 7)
