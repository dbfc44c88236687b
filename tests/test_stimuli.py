import numpy as np
import pytest

from topocli.errors import TopoInputError
from topocli.stimuli.stimulus_set import load_audio, load_image, load_stimulus_set


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))


def test_folder_conditions_lines_and_even_odd_splits(tmp_path):
    _write(tmp_path / "b" / "x.txt", "one\n\n two \nthree\n")
    _write(tmp_path / "a" / "y.txt", "uno\ndos\n")
    _write(tmp_path / "a" / "README.md", "ignored")
    stim = load_stimulus_set(tmp_path)
    assert stim.conditions == ["a", "b"]
    assert [s.text for s in stim] == ["uno", "dos", "one", "two", "three"]
    assert stim.split_index().tolist() == [0, 1, 0, 1, 0]
    assert stim.group_index().tolist() == [0, 1, 2, 3, 2]
    assert stim.modality == "text"


def test_single_condition_folder(tmp_path):
    _write(tmp_path / "animals" / "a.txt", "cat\ndog\n")
    stim = load_stimulus_set(tmp_path / "animals")
    assert stim.conditions == ["animals"] and len(stim) == 2


def test_csv_manifest(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "i.png")
    (tmp_path / "m.csv").write_text("condition,text,split\nx,hello,odd\nx,there,0\ny,you,1\n")
    stim = load_stimulus_set(tmp_path / "m.csv")
    assert stim.conditions == ["x", "y"] and stim.split_index().tolist() == [1, 0, 1]
    (tmp_path / "p.csv").write_text("condition,path\nx,i.png\n")
    assert load_stimulus_set(tmp_path / "p.csv").modality == "image"


def test_content_hash_changes_with_bytes(tmp_path):
    _write(tmp_path / "a" / "x.txt", "one\ntwo\n")
    h1 = load_stimulus_set(tmp_path).content_hash()
    _write(tmp_path / "a" / "x.txt", "one\ntwo!\n")
    assert load_stimulus_set(tmp_path).content_hash() != h1


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.mkdir(), "empty"),
        (lambda p: (p / "a").mkdir(parents=True), "condition 'a' has no stimuli"),
        (lambda p: _write(p / "a" / "x.docx", "hi"), "unsupported file type"),
        (lambda p: _write(p / "a" / "x.txt", "caf\xe9\n", "latin-1"), "not UTF-8"),
    ],
)
def test_bad_folders(tmp_path, setup, match):
    root = tmp_path / "stim"
    setup(root)
    with pytest.raises(TopoInputError, match=match):
        load_stimulus_set(root)


def test_mixed_modalities_refused(tmp_path):
    from PIL import Image

    _write(tmp_path / "a" / "x.txt", "hi\n")
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b" / "i.png")
    with pytest.raises(TopoInputError, match="mixes modalities"):
        load_stimulus_set(tmp_path)


def test_corrupt_media(tmp_path):
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG garbage")
    with pytest.raises(TopoInputError, match="cannot read image"):
        load_image(bad_png)
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF nonsense")
    with pytest.raises(TopoInputError, match="cannot read audio"):
        load_audio(bad_wav, 16000)


def test_audio_resampled_to_processor_rate(tmp_path):
    import soundfile as sf

    t = np.arange(22050) / 22050
    sf.write(tmp_path / "tone.wav", np.sin(2 * np.pi * 440 * t).astype(np.float32), 22050)
    wave = load_audio(tmp_path / "tone.wav", 16000)
    assert wave.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / wave.size - 440) < 2


def test_condition_with_too_few_per_split(tmp_path):
    _write(tmp_path / "a" / "x.txt", "one\ntwo\nthree\n")
    stim = load_stimulus_set(tmp_path)
    with pytest.raises(TopoInputError, match="odd split; need at least 2"):
        stim.require_min_per_split(2)
