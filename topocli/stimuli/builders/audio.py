"""Audio normalisation for built sets: mono 16 kHz, fixed duration, RMS-matched; speech synthesis
with ``espeak-ng``; sound quilts after Overath, McDermott, Zarate & Poeppel (2015).

Waveforms are float64 arrays in [-1, 1] until :func:`wav_bytes` quantises them to 16-bit PCM
with a header that holds nothing but the format (no timestamps: same samples, same bytes).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from topocli.errors import TopoInputError

RATE = 16000
TARGET_RMS = 0.05
RAMP_S = 0.01
PEAK = 0.99


def read_mono(path: Path, rate: int = RATE) -> np.ndarray:
    """Read any file libsndfile decodes (WAV, FLAC, OGG Vorbis) as mono at ``rate``.

    Raises
    ------
    TopoInputError
        A file that does not decode or holds no samples (callers skip it and say why).
    """
    from topocli.stimuli.stimulus_set import load_audio

    return np.asarray(load_audio(Path(path), rate), dtype=np.float64)


def trim_silence(x: np.ndarray, rate: int = RATE, floor_db: float = -40.0) -> np.ndarray:
    """Drop leading and trailing 10 ms frames quieter than ``floor_db`` below the loudest one."""
    hop = max(1, rate // 100)
    n = len(x) // hop
    if n == 0:
        return x
    frames = x[: n * hop].reshape(n, hop)
    level = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(level > level.max() * 10 ** (floor_db / 20))
    if loud.size == 0:
        return x[:0]
    return x[loud[0] * hop : (loud[-1] + 1) * hop]


def fit(
    x: np.ndarray, duration_s: float, rate: int = RATE, target_rms: float = TARGET_RMS
) -> tuple[np.ndarray, list[str]]:
    """Cut or zero-pad to a fixed duration, with 10 ms ramps; RMS-match the sound part.

    The RMS is matched over the sound before padding, so a short word and a long story get
    the same loudness rather than the same energy per clip. Peaks above 0.99 are scaled down
    (and said so).

    Returns
    -------
    (ndarray, list of str)
        The waveform and the transforms applied, for ``PROVENANCE.csv``.

    Raises
    ------
    TopoInputError
        Silence (nothing above the floor).
    """
    n = int(round(duration_s * rate))
    steps = []
    x = trim_silence(np.asarray(x, dtype=np.float64), rate)
    if x.size < rate // 50:
        raise TopoInputError("audio is silent (nothing 40 dB above its floor)")
    steps.append("trimmed silence")
    if x.size > n:
        x = x[:n]
        steps.append(f"cut to {duration_s:g} s")
    ramp = min(int(RAMP_S * rate), x.size // 2)
    if ramp > 0:
        window = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        x = x.copy()
        x[:ramp] *= window
        x[-ramp:] *= window[::-1]
    rms = float(np.sqrt((x**2).mean()))
    x = x * (target_rms / rms)
    steps.append(f"RMS {target_rms:g}")
    peak = float(np.abs(x).max())
    if peak > PEAK:
        x = x * (PEAK / peak)
        steps.append(f"peak-limited (RMS {target_rms * PEAK / peak:.3g})")
    if x.size < n:
        x = np.concatenate([x, np.zeros(n - x.size)])
        steps.append(f"padded to {duration_s:g} s")
    return x, steps


def wav_bytes(x: np.ndarray, rate: int = RATE) -> bytes:
    """16-bit PCM mono WAV bytes with a plain RIFF header."""
    from scipy.io import wavfile

    pcm = np.clip(np.rint(np.asarray(x) * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    wavfile.write(buf, rate, pcm)
    return buf.getvalue()


def espeak(text: str, voice: str, program: Path, words_per_minute: int = 165) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng in ``voice``; returns mono float64 at 16 kHz.

    Raises
    ------
    TopoInputError
        espeak-ng fails (unknown voice, no audio).
    """
    with tempfile.TemporaryDirectory(prefix="topo-espeak-") as tmp:
        out = Path(tmp) / "speech.wav"
        cmd = [str(program), "-v", voice, "-s", str(words_per_minute), "-w", str(out), "--stdin"]
        try:
            done = subprocess.run(
                cmd, input=text, capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TopoInputError(f"espeak-ng failed ({exc.__class__.__name__})", program) from None
        if done.returncode != 0 or not out.is_file():
            reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
            raise TopoInputError(f"espeak-ng voice {voice!r} failed: {reason}", program)
        return read_mono(out)


# ---------------------------------------------------------------------- quilting
def cochleagram(x: np.ndarray, rate: int = RATE, n_bands: int = 32, hop_s: float = 0.005):
    """Log band energies on an ERB-spaced filterbank from a short-time Fourier transform.

    A light stand-in for a gammatone cochleagram: 32 triangular bands equally spaced on the
    ERB-number scale between 50 Hz and 8 kHz, 16 ms Hann windows, 5 ms hop.

    Returns
    -------
    ndarray of shape (n_frames, n_bands)
    """
    hop = int(round(hop_s * rate))
    win = 256
    if x.size < win:
        x = np.concatenate([x, np.zeros(win - x.size)])
    n_frames = 1 + (x.size - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hanning(win), axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / rate)

    def erb(f):
        return 21.4 * np.log10(1 + 0.00437 * f)

    edges_erb = np.linspace(erb(50.0), erb(min(8000.0, rate / 2)), n_bands + 2)
    edges = (10 ** (edges_erb / 21.4) - 1) / 0.00437
    bank = np.zeros((n_bands, freqs.size))
    for b in range(n_bands):
        lo, mid, hi = edges[b : b + 3]
        bank[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, 1)
    return np.log(spec @ bank.T + 1e-10)


def quilt(
    x: np.ndarray, rng: np.random.Generator, rate: int = RATE, segment_s: float = 0.06
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder short segments of a sound so its boundaries change like the original's.

    After Overath et al. (2015): the sound is cut into segments of ``segment_s``; starting from
    a random segment, the next one is the unused segment (not the original successor) whose
    cochleagram change across the new boundary is closest to the change across the current
    segment's original boundary. Segments are joined with 5 ms raised-cosine cross-fades.
    Simplifications (documented in the set's README): the cochleagram is the STFT-based
    :func:`cochleagram`, the change is the Euclidean distance between the last frame of one
    segment and the first frame of the next, and there is no pitch-synchronous overlap-add.

    Returns
    -------
    (ndarray, ndarray)
        The quilt and the segment order used (indices into the original's segments).
    """
    seg = int(round(segment_s * rate))
    n = x.size // seg
    if n < 3:
        raise TopoInputError(f"sound too short to quilt ({x.size / rate:.2f} s)")
    segments = x[: n * seg].reshape(n, seg)
    cg = cochleagram(x[: n * seg], rate)
    frames_per_seg = max(1, cg.shape[0] // n)
    starts = np.stack([cg[min(i * frames_per_seg, cg.shape[0] - 1)] for i in range(n)])
    ends = np.stack([cg[min((i + 1) * frames_per_seg - 1, cg.shape[0] - 1)] for i in range(n)])
    original = np.linalg.norm(starts[1:] - ends[:-1], axis=1)  # change at boundary i -> i+1
    typical = float(np.median(original))
    order = [int(rng.integers(n))]
    used = np.zeros(n, dtype=bool)
    used[order[0]] = True
    for _ in range(n - 1):
        cur = order[-1]
        target = original[cur] if cur < n - 1 else typical
        change = np.linalg.norm(starts - ends[cur], axis=1)
        cost = np.abs(change - target) + rng.uniform(0, 1e-9, n)  # random tie-break
        cost[used] = np.inf
        if cur + 1 < n and np.isfinite(cost).sum() > 1:
            cost[cur + 1] = np.inf
        nxt = int(np.argmin(cost))
        order.append(nxt)
        used[nxt] = True
    fade = min(int(0.005 * rate), seg // 4)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade) if fade else np.ones(0)
    out = segments[order[0]].copy()
    for i in order[1:]:
        piece = segments[i].copy()
        if fade:
            out[-fade:] = out[-fade:] * ramp[::-1] + piece[:fade] * ramp
            piece = piece[fade:]
        out = np.concatenate([out, piece])
    return out, np.asarray(order)


def audio_stats(x: np.ndarray, rate: int = RATE) -> dict[str, float]:
    """Low-level statistics reported per condition: RMS of the whole clip (padding included),
    duration of the sound part and its spectral centroid."""
    active = trim_silence(x, rate)
    spec = np.abs(np.fft.rfft(active)) ** 2 if active.size else np.zeros(1)
    freqs = np.fft.rfftfreq(max(active.size, 1), 1.0 / rate)
    return {
        "rms_clip": float(np.sqrt((x**2).mean())),  # padding included
        "sound_s": float(active.size / rate),
        "centroid_hz": float((spec * freqs).sum() / max(spec.sum(), 1e-20)),
    }
