"""The Streamlit app's helpers (``app.py`` and ``pages/``, which hold layout only): everything the
pages compute, draw or export comes from here, and everything here calls camlib for the numbers.

* :mod:`appkit.inputs`: the current image shared by all pages, samples, uploads (a message for the
  user, never a traceback);
* :mod:`appkit.models`: the models, loaded once per server process and shared by every session (a
  ``CamModel`` is thread-safe and uses no hooks); why a zoo model cannot be loaded here;
* :mod:`appkit.compute`: cached computations (``st.cache_data``, keyed by model name, image hash and
  parameters, returning plain numpy arrays and dicts);
* :mod:`appkit.estimators`: the estimators page's cached comparison, figure and reading;
* :mod:`appkit.figures` (plotly), :mod:`appkit.exports` (overlays, PNG, CSV), :mod:`appkit.format`
  (numbers for the screen), :mod:`appkit.pages` (entry point, shared selection, progress bars, the
  heatmap grid), :mod:`appkit.vqa` (the VQA page's scenes and pictures).

The pages use the names re-exported here (``appkit.explanation``, ``appkit.coefficient_figure``, ...).
"""

from appkit.format import fmt, fmt_fixed, fmt_percent, finite  # noqa: F401
from appkit.pages import DEFAULT_METHODS, SLOW_METHODS, ENTRYPOINT_SEEN, method_title, ordered_for_compute, progress_bar, run_from_entrypoint, selection, grid_columns, method_cells, APP_MAXIMUM, option_controls  # noqa: F401
from appkit.inputs import DEFAULT_SAMPLE, WORK_SIDE, Box, CurrentImage, thumbnail, working_image, make_current, UploadResult, read_upload, upload_to_current, sample_image, sample_list  # noqa: F401
from appkit.models import DEFAULT_MODEL, IMAGE_MODELS, get_model, model_status, model_title, layer_options, layer_label, tail_note  # noqa: F401
from appkit.compute import BATCH_SIZE, PREDICTED, predictions, top_classes, target_options, target_label, explanation, activations, map_saliency, activation_map, coefficient_table, top_maps, cosine, faithfulness, pointing_game, explanation_images  # noqa: F401
from appkit.exports import overlay_image, activation_overlay, draw_boxes, overlay_png, coefficients_csv  # noqa: F401
from appkit.figures import POSITIVE, NEGATIVE, coefficient_figure, selected_map, insertion_deletion_figure, probability_figure  # noqa: F401
from appkit.estimators import REFERENCE_CHOICES, SAMPLED_ORDERINGS, decade_ticks, estimator_comparison, estimators_figure, reading, snapshot_budget  # noqa: F401
