"""The Streamlit app's helpers (``app.py`` and ``pages/``, which hold layout only): everything the
pages compute, draw or export comes from here, and everything here calls camlib for the numbers.

* :mod:`appkit.service`: the compute service, one per server process: keyed jobs (a result is
  computed once for every session), a bounded pool whose torch threads never exceed the cores,
  interactive jobs before slow ones, bounded memory of finished results;
* :mod:`appkit.compute`: what the pages compute, as jobs of the service (``submit_*``) or waited for
  (``explanation``, ``predictions``, ...), returning plain numpy arrays and dicts;
* :mod:`appkit.costs`: expected times of the slow methods (their evaluation counts × this machine's
  measured speed);
* :mod:`appkit.inputs`: the current image shared by all pages, samples, uploads (a message for the
  user, never a traceback);
* :mod:`appkit.models`: the models, loaded once per server process and shared by every session (a
  ``CamModel`` is thread-safe and uses no hooks); why a zoo model cannot be loaded here;
* :mod:`appkit.estimators`: the estimators page's cached comparison, figure and reading;
* :mod:`appkit.figures` (plotly), :mod:`appkit.exports` (overlays, PNG, CSV), :mod:`appkit.format`
  (numbers for the screen), :mod:`appkit.pages` (entry point, shared selection, the heatmap grid, job
  cells), :mod:`appkit.urlstate` (the view in the URL), :mod:`appkit.notfound` (a page for unknown
  paths), :mod:`appkit.teaching` (the landing page's explanations), :mod:`appkit.vqa` (the VQA page's
  scenes and pictures).

The pages use the names re-exported here (``appkit.explanation``, ``appkit.coefficient_figure``, ...).
"""

from appkit import notfound, urlstate  # noqa: F401
from appkit.format import fmt, fmt_fixed, fmt_percent, finite  # noqa: F401
from appkit.pages import DEFAULT_METHODS, SLOW_METHODS, ENTRYPOINT_SEEN, method_title, methods_in_menu, method_summary, is_slow, methods_help, ordered_for_compute, progress_bar, run_from_entrypoint, selection, grid, grid_columns, method_cells, APP_MAXIMUM, option_controls, show_jobs, status_text, time_caption, duration, requested, request, start_cell, footer, deferred_chart, sync_map_picker, interactive_work  # noqa: F401
from appkit.inputs import DEFAULT_SAMPLE, WORK_SIDE, Box, CurrentImage, thumbnail, working_image, make_current, UploadResult, read_upload, upload_to_current, sample_image, sample_list  # noqa: F401
from appkit.models import DEFAULT_MODEL, IMAGE_MODELS, get_model, model_status, model_title, layer_options, layer_label, tail_note, contrast_layer, has_layer  # noqa: F401
from appkit.service import service, Lane, State, ServiceBusy, result_of  # noqa: F401
from appkit.compute import BATCH_SIZE, PREDICTED, lane_of, predictions, submit_predictions, top_classes, target_options, target_label, explanation, plan_explanation, plan_explanations, AUTO_START, explanation_key, find_explanation, submit_explanation, activations, submit_activations, map_saliency, activation_map, varying_maps, first_varying, saliency_agreement, coefficient_table, top_maps, cosine, faithfulness, submit_faithfulness, pointing_game, box_area_share, explanation_images, sample_classes, fairest_sample  # noqa: F401
from appkit.costs import cost_words, expected_seconds, estimate_known  # noqa: F401
from appkit.exports import inline, overlay_image, activation_overlay, draw_boxes, overlay_png, coefficients_csv  # noqa: F401
from appkit.figures import POSITIVE, NEGATIVE, coefficient_figure, selected_map, insertion_deletion_figure, probability_figure, top5_html  # noqa: F401
from appkit.estimators import REFERENCE_CHOICES, SAMPLED_ORDERINGS, decade_ticks, estimator_comparison, estimators_figure, reading, snapshot_budget  # noqa: F401
