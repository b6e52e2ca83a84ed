"""The recipe layer: every command-line job is a typed config (YAML + ``key=value`` overrides) and one
function that runs it on a ``JobSession``.

    session.py      open_session(): run directory, task, server (serving.launch: started or remote), LM,
                    adapter registry
    settings.py     the shared config sections: LMSettings, BootstrapSettings, PromptOptimizerSettings
                    (the server section is serving.config.ServerConfig, which `dspylite serve` reads too)
    tasks.py        TaskSettings and load_task(): built-in tasks or the user's program on a JSONL dataset
    eval_job.py / optimize_job.py / finetune_job.py / grpo_job.py / better_together_job.py / demo_job.py
                    one module per job
    report_job.py   render_report(): a run directory's report from its files alone

    from dspylite.jobs.eval_job import run_eval_job
    run = run_eval_job("configs/eval.yaml", ["task.n_test=50"])

Libraries (dspylite core and optimizers, finetune/, rl/, serving/, sources/) never import this package
(tests/unit/test_layering.py). Nothing here imports torch, transformers or vLLM at import time.
"""
