"""Command-line jobs: each one a typed config (YAML + ``key=value`` overrides) and a function that runs it.

    from dspylite.jobs.eval_job import run_eval_job
    run = run_eval_job("configs/eval.yaml", ["task.n_test=50"])

Every job writes a run directory (config.yaml, metrics.jsonl, program.json, adapters/, job.json,
report.md, report.png); ``dspylite.jobs.report_job.render_report`` redraws the report from those
files alone. Nothing here imports torch, transformers or vLLM at import time.
"""
