"""The names of the shipped topographic models, without importing torch.

One table for every place that needs the names (``--model`` resolution in
:mod:`topocli.models.registry`, the control test of ``topo compare``): each shipped checkpoint
(a folder under ``topocli/data``), the packaged backbone it adapts, its identity-adaptor
control's name, and the default per stimulus modality.
"""

from __future__ import annotations

# name -> folder under topocli/data: the trained topographic checkpoints the package ships
SHIPPED = {
    "minilm": "minilm-topo",
    "smollm2-topo": "smollm2-topo",
    "efficientnet-lite0-topo": "efficientnet-lite0-topo",
    "whisper-tiny-topo": "whisper-tiny-topo",
}

# the packaged backbone each shipped checkpoint adapts (minilm's is embedded in its package)
SHIPPED_BASE = {
    "smollm2-topo": "smollm2",
    "efficientnet-lite0-topo": "efficientnet-lite0",
    "whisper-tiny-topo": "whisper-tiny",
}

# the light text default stays MiniLM (docs/findings.md: the README's main job is ~5.5x slower
# on SmolLM2); smollm2-topo is the language model for next-token read-outs
DEFAULT_BY_MODALITY = {
    "text": "minilm",
    "image": "efficientnet-lite0-topo",
    "audio": "whisper-tiny-topo",
}

DEFAULT_MODEL = DEFAULT_BY_MODALITY["text"]

CONTROL_MODEL = "minilm-control"


def control_name(name: str) -> str:
    """The ``--model`` name of a shipped checkpoint's identity-adaptor control."""
    return CONTROL_MODEL if name == DEFAULT_MODEL else f"{name}-control"


# control name -> the shipped checkpoint it controls
CONTROL_OF = {control_name(name): name for name in SHIPPED}
