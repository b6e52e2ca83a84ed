"""Built-in synthetic tasks: deterministic for a seed, with train/dev/test splits and metrics.

- Fact QA (two-module: extract the fact, then answer): ``load_fact_qa``, ``fact_qa_metric``;
  the reference program is ``dspylite.datasets.programs.FactQA``.
- Fact Topic (one module, ``Literal`` output): ``load_fact_topic``, ``fact_topic_metric``.
- Feedback metrics for GEPA (score + what went wrong in words): ``fact_qa_feedback_metric``,
  ``fact_topic_feedback_metric``.
- Metrics of the public benchmarks (data: ``sources.datasets``): ``numeric_match`` (ASDiv, GSM8K),
  ``boolean_match`` (BoolQ), their feedback forms, and the answer readers ``parse_number``, ``parse_bool``.
"""

from dspylite.datasets.answer_metrics import (
    boolean_feedback_metric,
    boolean_match,
    numeric_feedback_metric,
    numeric_match,
)
from dspylite.datasets.answers import parse_bool, parse_number
from dspylite.datasets.fact_qa import (
    FACT_QA_INPUTS,
    FactQAItem,
    fact_match_metric,
    fact_qa_copy_reward,
    fact_qa_metric,
    fact_qa_partial_metric,
    fact_qa_splits,
    generate_fact_qa_item,
    iter_fact_qa_items,
    load_fact_qa,
)
from dspylite.datasets.fact_topic import TOPICS, fact_topic_metric, fact_topic_splits, load_fact_topic
from dspylite.datasets.feedback import fact_qa_feedback_metric, fact_topic_feedback_metric
from dspylite.datasets.normalize import normalize_answer

__all__ = [
    "FACT_QA_INPUTS",
    "TOPICS",
    "FactQAItem",
    "boolean_feedback_metric",
    "boolean_match",
    "fact_match_metric",
    "fact_qa_metric",
    "fact_qa_copy_reward",
    "fact_qa_feedback_metric",
    "fact_qa_partial_metric",
    "fact_qa_splits",
    "fact_topic_feedback_metric",
    "fact_topic_metric",
    "fact_topic_splits",
    "generate_fact_qa_item",
    "iter_fact_qa_items",
    "load_fact_qa",
    "load_fact_topic",
    "normalize_answer",
    "numeric_feedback_metric",
    "numeric_match",
    "parse_bool",
    "parse_number",
]
