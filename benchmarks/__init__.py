"""The benchmark scripts of pillargraph, each run from the repository root as ``python benchmarks/NAME.py``
(``--help`` says what it measures and about how long it takes on 2 cores); results in ``benchmarks/results/``.

Shared pieces live in ``common.py`` (progress lines, peak memory, recorded commands, caption-proxy data,
learned-recipe variants, trained models on disk, atomic writes, ``--help`` descriptions). Two scripts are
split by concern:

* ``caption_proxy.py`` (the command line) with ``caption_proxy_data.py`` (protocols, row names, bundles),
  ``caption_proxy_runs.py`` (training, dev tuning, test cases) and ``caption_proxy_report.py`` (markdown,
  figure, merging of runs);
* ``coco_scale.py`` (the parent: child processes, the distributed comparison, the report) with
  ``coco_scale_stages.py`` (what each stage does and measures).

Not part of the installed package (``pyproject.toml`` ships ``pillargraph*`` only).
"""
