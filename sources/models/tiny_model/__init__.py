"""The tiny local base model: a small Llama + BPE tokenizer, pretrained offline on the built-in tasks.

``build_tiny_model()`` returns a normal Hugging Face model directory (transformers, PEFT and vLLM load
it), cached per recipe. Nothing here is special-cased elsewhere: a real checkpoint directory works
wherever this one does.
"""

from sources.models.tiny_model.build import build_tiny_model, default_models_root, read_marker
from sources.models.tiny_model.recipe import TinyModelRecipe

__all__ = ["TinyModelRecipe", "build_tiny_model", "default_models_root", "read_marker"]
