"""Benchmarks of the paper's Sec. 4 on real data: ``python -m camlib.bench SUBCOMMAND``.

Sub-commands (each imported only when used):

* ``faithfulness``   IC / AD / ADD, insertion / deletion AUC, energy pointing game (Tables 3-5)
* ``shap-agreement`` cosine similarity of each method's α to SHAP-CAM with many orderings (Table 2)
* ``shap-table1``    IC / AD / ADD of SHAP-CAM_1/10/100 averaged over seeds (Table 1)
* ``speed``          timing of the methods (:mod:`camlib.bench.speed`, when installed)

All take a folder with an ``index.csv`` (imagenet-val-dev format, see :mod:`camlib.bench.data`),
write per-image CSV rows and a Markdown table to ``--out``, resume when re-run, and scale out under
``torchrun --nproc-per-node N`` (see :mod:`camlib.bench.distributed`).
"""
