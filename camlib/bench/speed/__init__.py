"""Speed benchmark: camlib against pytorch-grad-cam, torchcam and captum, in one process.

Run as ``python -m camlib.bench speed ...`` (or ``python -m camlib.bench.speed ...``)::

    python -m camlib.bench speed --models efficientnet_lite0 vgg16 resnet50 --repeats 5 --out speed.md

For each model (EfficientNet-Lite0 pretrained and offline; other zoo models with random weights,
which is fine for timing) the same image, CAM layer, target class and device are given to every
library. Everything below is measured in one process and one run:

* **time**: median over ``--repeats`` runs after one warm-up run, the cases of a model
  interleaved (each repetition runs every case once, in an order rotated per repetition) so that
  a change of machine load hits all cases alike. Each case is an image → saliency map call as a
  user writes it (normalisation and upsampling included). Slow cases (every library's Score-CAM,
  pytorch-grad-cam's Ablation-CAM: hundreds to thousands of forward passes) run
  ``--slow-repeats`` times (default 1) without a warm-up run; the table says how many runs each
  median has. ``× forward``: the median divided by the median of a plain no-grad forward pass of
  the same model on the same image, timed in the same interleaved loop.
* **memory** (unless ``--no-memory``): peak memory of one run of each case in a fresh subprocess.
  CPU: the resident-set high-water mark (``VmHWM`` of /proc/self/status, reset through
  /proc/self/clear_refs just before the run; ``ru_maxrss`` differences where that is not
  available) minus the resident set before the run: the extra memory the method needs on top of
  the loaded model. CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the run.
* **agreement**: the coefficients α of every peer, obtained through the peers' own APIs during
  the timed runs themselves (pytorch-grad-cam: the value returned by the CAM object's
  ``get_cam_weights``; torchcam: by the extractor's ``_get_weights``; captum: the DeepLift
  attributions of the tail module, summed over space), against camlib's ``Explanation.coefficients``:
  max |Δ| and max |Δ| / max |α_camlib|, for the pairs whose definitions coincide, and, marked as
  such, for pairs that differ by definition.
* **batches**: camlib explaining 16 images in one call against 16 calls of one image each.
* **SHAP-CAM**: time per ordering of the naive prefix evaluation (``NaiveCoalitions``: K + 1 tail
  passes) against camlib's ``FastCoalitions``, and SHAP-CAM_|Π| end to end.

Peers use the module the way their documentation shows (:mod:`camlib.bench.speed.peers`); a
method that no peer implements (CAM, SHAP-CAM, any method added to :data:`camlib.methods.METHODS`)
is timed by camlib alone: ``--methods KEY``.

The package, one concern per module:

* :mod:`~camlib.bench.speed.cli`: the options and the run over the models (``main``);
* :mod:`~camlib.bench.speed.subject`: the model, layer, image and target every library is given;
* :mod:`~camlib.bench.speed.cases`: what is timed, from the methods' metadata (camlib, the forward pass);
* :mod:`~camlib.bench.speed.peers`: the pytorch-grad-cam, torchcam and captum adapters, which methods
  each implements and where its definitions differ from camlib's;
* :mod:`~camlib.bench.speed.timing`: a case and the interleaved timing loop;
* :mod:`~camlib.bench.speed.agreement`: camlib's coefficients against the peers';
* :mod:`~camlib.bench.speed.batches`: one call for N images against N calls;
* :mod:`~camlib.bench.speed.shap_prefixes`: the coalition backends timed against each other;
* :mod:`~camlib.bench.speed.memory`: peak memory, one subprocess per case;
* :mod:`~camlib.bench.speed.machine`, :mod:`~camlib.bench.speed.targets`,
  :mod:`~camlib.bench.speed.report`: the machine, the speed targets, the Markdown and JSON output.
"""

from __future__ import annotations

from camlib.bench.speed.agreement import AGREEMENT_TOL, agreement_rows, check_agreement, compare
from camlib.bench.speed.batches import time_batches
from camlib.bench.speed.cases import DEFAULT_METHODS, build_cases, method_options
from camlib.bench.speed.cli import DEFAULT_MODELS, main
from camlib.bench.speed.machine import machine_info
from camlib.bench.speed.memory import PeakMemory, measure_memory, probe_memory
from camlib.bench.speed.peers import LIBRARIES, PEER_METHODS, captum_supported, captum_tail
from camlib.bench.speed.report import render
from camlib.bench.speed.shap_prefixes import SHAP_LAYERS, time_shap
from camlib.bench.speed.subject import Subject, load_subject, sample_images
from camlib.bench.speed.targets import evaluate_targets
from camlib.bench.speed.timing import Case, run_case, time_cases

__all__ = ["AGREEMENT_TOL", "DEFAULT_METHODS", "DEFAULT_MODELS", "LIBRARIES", "PEER_METHODS", "SHAP_LAYERS", "Case",
           "PeakMemory", "Subject", "agreement_rows", "build_cases", "captum_supported", "captum_tail",
           "check_agreement", "compare", "evaluate_targets", "load_subject", "machine_info", "main",
           "measure_memory", "method_options", "probe_memory", "render", "run_case", "sample_images", "time_batches",
           "time_cases", "time_shap"]
