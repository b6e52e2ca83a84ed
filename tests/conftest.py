"""Test-wide environment: offline, single-threaded torch, and caches kept out of the home directory."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# LM responses cached by one test must never answer another test run.
os.environ["DSPYLITE_CACHE_DIR"] = tempfile.mkdtemp(prefix="dspylite-test-cache-")
