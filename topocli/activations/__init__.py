"""The activation pipeline: stimuli + model -> pooled sheet activations -> sufficient statistics.

Every command that runs stimuli through a model uses :func:`extract` (streaming, cached,
sharded over ``torch.distributed`` ranks); second passes read an :class:`ActivationSource`.
Modules (model inputs and final representations are :mod:`topocli.models.inputs`):
:mod:`~topocli.activations.cache` (the content-hashed float16 cache),
:mod:`~topocli.activations.source` (activations kept for second passes),
:mod:`~topocli.activations.extraction` (the pass itself).
"""
