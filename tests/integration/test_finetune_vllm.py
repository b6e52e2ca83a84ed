"""BootstrapFinetune for real: the tiny model served by the session's vLLM, TRL + PEFT training for a
few steps, the adapter loaded back into vLLM and into plain PEFT, resume after a kill, bad input.

Training stays tiny (a few steps, max_length 512) so the whole integration suite fits its budget.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dspylite as dspy
from dspylite.config_io import to_dict
from dspylite.datasets import load_fact_qa
from dspylite.datasets.programs import FactQA
from dspylite.errors import OptimizerError, TrainingError
from dspylite.optimizers import BootstrapFinetune
from dspylite.optimizers.bootstrap_finetune import BootstrapFinetuneConfig
from finetune.config import FinetuneConfig, LoraSettings
from finetune.data import SFTData
from finetune.sft import build_sft_trainer, latest_checkpoint, train_lora
from serving.backend import Backend

pytestmark = pytest.mark.integration


def small_config(**overrides) -> FinetuneConfig:
    base = {
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "max_length": 512,
        "learning_rate": 2e-3,
        "logging_steps": 1,
        "save_steps": 3,
        "val_fraction": 0.1,
        "threads": 1,
        "lora": LoraSettings(r=8, alpha=16),
    }
    return FinetuneConfig(**{**base, **overrides})


def answered(example, prediction, trace=None) -> float:
    """Passes every run that produced an answer: the mechanics under test must not hinge on the tiny
    model's accuracy (the accuracy gain is what `dspylite finetune` measures)."""
    return float(bool(str(prediction.answer).strip()))


@pytest.fixture(scope="module")
def finetuned(_session_server, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One BootstrapFinetune run shared by the tests below (the expensive part, done once)."""
    vllm_server = _session_server
    if not vllm_server.is_running() or not vllm_server.is_healthy():
        vllm_server.restart()
    run_dir = tmp_path_factory.mktemp("bootstrap-finetune")
    lm = vllm_server.lm(temperature=0.0, max_tokens=96, cache_dir=str(run_dir / "lm_cache"))
    program = FactQA()
    program.set_lm(lm)
    trainset = load_fact_qa(seed=3, n_train=24, n_dev=0, n_test=0)["train"]
    config = BootstrapFinetuneConfig(
        run_name="it-sft",
        samples_per_example=3,
        sample_temperature=1.0,
        display_progress=False,
        sft=small_config(),
    )
    optimizer = BootstrapFinetune(answered, Backend(vllm_server, run_dir=run_dir), config, num_threads=8)
    tuned = optimizer.compile(program, trainset=trainset)
    return {"program": program, "tuned": tuned, "optimizer": optimizer, "run_dir": run_dir, "lm": lm}


def test_compile_serves_a_new_adapter_and_binds_a_copy(finetuned, vllm_server) -> None:
    optimizer, tuned, program = finetuned["optimizer"], finetuned["tuned"], finetuned["program"]
    [name] = optimizer.outcome.adapters
    assert name.startswith("it-sft-")
    assert name in vllm_server.adapters()
    assert {p.lm.model for p in tuned.predictors()} == {name}
    assert {p.lm.model for p in program.predictors()} == {finetuned["lm"].model}  # the original is untouched
    example = load_fact_qa(seed=3, n_train=0, n_dev=1, n_test=0)["dev"][0]
    with dspy.capture_traces() as traces:
        try:
            tuned(context=example.context, question=example.question)
        except dspy.AdapterParseError:
            pass  # a few SFT steps need not fix every output; what matters is who answered
    assert traces and {t.model for t in traces} == {name}
    card = optimizer.outcome.data_card
    assert card["rows_train"] > 0 and card["runs_total"] == 24 * 3
    # server.dtype -> VLLMServer.dtype -> Backend.serving_dtype -> train_lora -> the adapter's metadata
    metadata = json.loads((Path(optimizer.outcome.adapters[name]) / "dspylite_adapter.json").read_text())
    assert metadata["precision"]["serving_dtype"] == vllm_server.dtype == "float32"
    assert (finetuned["run_dir"] / "data" / "dataset").is_dir()
    assert (finetuned["run_dir"] / "program.json").exists()


def test_rows_are_what_vllm_saw_and_said(finetuned, tiny_model_dir: Path) -> None:
    """Invariant 1: the chat template reproduces the server's prompt tokens; the completion is the raw text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = SFTData.load(finetuned["run_dir"] / "data")
    rows = [r for r in data.train if r.prompt_token_ids][:10]
    assert rows, "vLLM returned no token ids"
    for row in rows:
        rendered = tokenizer.apply_chat_template(
            row.prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert list(rendered) == row.prompt_token_ids
        said = tokenizer.decode(row.completion_token_ids, skip_special_tokens=True)
        assert said == row.completion[0]["content"]


def test_collated_batch_masks_every_prompt_token(finetuned, tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = SFTData.load(finetuned["run_dir"] / "data")
    setup = build_sft_trainer(data, small_config(group_by_length=False), tmp_path, model_path=tiny_model_dir)
    n = min(4, len(data.train))
    batch = setup.trainer.data_collator([setup.trainer.train_dataset[i] for i in range(n)])
    for i, row in enumerate(data.train[:n]):
        prompt_len = len(
            tokenizer.apply_chat_template(
                row.prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        length = int(batch["attention_mask"][i].sum())
        labels, ids = batch["labels"][i, :length], batch["input_ids"][i, :length]
        assert (labels[:prompt_len] == -100).all()
        assert (labels[prompt_len:] == ids[prompt_len:]).all()
        assert (batch["labels"][i, length:] == -100).all()  # padding


def test_the_adapter_loads_in_plain_peft_and_answers_like_vllm(
    finetuned, vllm_server, tiny_model_dir: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    [(name, path)] = finetuned["optimizer"].outcome.adapters.items()
    meta = json.loads((Path(path) / "dspylite_adapter.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), path
    )
    model.eval()
    data = SFTData.load(finetuned["run_dir"] / "data")
    messages = data.train[0].prompt
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    peft_text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    [served] = vllm_server.lm(name, temperature=0.0, max_tokens=12, cache=False).generate(messages)
    assert served.model == name
    assert served.text.strip()[:20] == peft_text.strip()[:20]


def test_a_killed_training_run_resumes_from_its_last_checkpoint(
    finetuned, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data_dir = finetuned["run_dir"] / "data"
    run_dir = tmp_path / "run"
    cfg = small_config(max_steps=8, save_steps=2, val_fraction=0.0)
    (tmp_path / "cfg.json").write_text(json.dumps(to_dict(cfg)))
    script = textwrap.dedent(f"""
        import json, time
        from transformers import TrainerCallback
        from dspylite.config_io import from_dict
        from finetune.config import FinetuneConfig
        from finetune.data import SFTData
        from finetune.sft import train_lora

        class Slow(TrainerCallback):  # room for the test to kill it mid-run
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(1.0)

        cfg = from_dict(FinetuneConfig, json.loads(open({str(tmp_path / "cfg.json")!r}).read()))
        train_lora(
            SFTData.load({str(data_dir)!r}),
            cfg,
            {str(run_dir)!r},
            model_path={str(tiny_model_dir)!r},
            callbacks=[Slow()],
        )
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            checkpoints = list((run_dir / "checkpoints").glob("*/checkpoint-*/trainer_state.json"))
            if any(p.parent.name in ("checkpoint-4", "checkpoint-6") for p in checkpoints):
                break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint appeared in time")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run_dir / "adapters").exists() or not any((run_dir / "adapters").iterdir())
    [key_dir] = list((run_dir / "checkpoints").iterdir())
    resume_point = latest_checkpoint(key_dir)
    assert resume_point is not None

    result = train_lora(SFTData.load(data_dir), cfg, run_dir, model_path=tiny_model_dir)
    assert result.resumed_from == resume_point
    assert result.metrics["global_step"] == 8
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed_step = int(resume_point.rsplit("-", 1)[1])
    after_resume = [r["step"] for r in logged if r.get("phase") == "sft" and "loss" in r][
        -(8 - resumed_step) :
    ]
    assert after_resume == list(range(resumed_step + 1, 9))


def test_a_target_module_the_model_lacks_is_refused(finetuned, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = SFTData.load(finetuned["run_dir"] / "data")
    cfg = small_config(lora=LoraSettings(r=8, target_modules=["query_key_value"]))
    with pytest.raises(TrainingError, match=r"\['query_key_value'\] not found.*'q_proj'"):
        train_lora(data, cfg, tmp_path, model_path=tiny_model_dir)


def test_a_rank_above_the_servers_limit_is_refused_before_training(vllm_server, tmp_path: Path) -> None:
    optimizer = BootstrapFinetune(
        answered,
        Backend(vllm_server, run_dir=tmp_path),
        BootstrapFinetuneConfig(display_progress=False, sft=small_config(lora=LoraSettings(r=64))),
    )
    with pytest.raises(OptimizerError, match="max_lora_rank=16"):
        optimizer.compile(FactQA(), trainset=load_fact_qa(n_train=2, n_dev=0, n_test=0)["train"])


def test_a_running_server_by_api_base_and_a_shared_registry(vllm_server, tmp_path: Path) -> None:
    from serving import connect
    from serving.registry import AdapterRegistry

    registry = AdapterRegistry(tmp_path / "registry")
    program = FactQA()
    program.set_lm(vllm_server.lm(max_tokens=96, cache_dir=str(tmp_path / "cache")))
    backend = Backend(connect(vllm_server.api_base), run_dir=tmp_path / "run", registry=registry)
    optimizer = BootstrapFinetune(
        answered,
        backend.lm(),  # DSPy's shape: the LM that carries the backend
        BootstrapFinetuneConfig(
            run_name="by-url", display_progress=False, sft=small_config(max_steps=2, val_fraction=0.0)
        ),
        num_threads=4,
    )
    tuned = optimizer.compile(program, trainset=load_fact_qa(seed=5, n_train=6, n_dev=0, n_test=0)["train"])
    entry = registry.latest("by-url")
    assert entry is not None and re.fullmatch(r"by-url-[0-9a-f]{6}-1", entry.name)
    assert entry.name in vllm_server.adapters()
    assert {p.lm.model for p in tuned.predictors()} == {entry.name}
