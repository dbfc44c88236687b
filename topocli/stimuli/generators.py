"""Stimulus generators: retinotopy noise patches and tonotopy pure tones, written reproducibly.

Every file is written atomically (temp name, then rename) and is the same bytes for the same
seed.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from topocli.errors import TopoInputError

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def tone_name(freq_hz: float) -> str:
    text = f"{freq_hz:g}".replace(".", "p")
    return f"tone_{text}hz"


def _atomic_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp")


def _position_name(xy: Sequence[float]) -> str:
    return f"x{round(xy[0] * 100):03d}_y{round(xy[1] * 100):03d}"


def generate_retinotopy(
    out_dir: str | Path,
    positions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    n_per_position: int = 20,
    size_px: int = 224,
    seed: int = 0,
    *,
    sigma_fraction: float = 0.08,
) -> dict[str, Path]:
    """Write Gaussian-windowed noise patches at set visual-field positions as PNG images.

    Each image is mid-grey with white noise (uniform in [-1, 1], full contrast at the centre)
    multiplied by a Gaussian window centred on the position; RGB, ``size_px`` square. The noise of
    image ``i`` at a position depends only on ``(seed, position name, i)``, so the same arguments
    give the same bytes.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; one sub-folder per position condition is written.
    positions : mapping of name to (x, y), or sequence of (x, y)
        Window centres as fractions of the image width / height (x to the right, y down), in
        [0, 1]. A sequence gets names like ``x020_y050``.
    n_per_position : int
        Images per position.
    size_px : int
        Image side in pixels (>= 8).
    seed : int
        Random seed.
    sigma_fraction : float
        Gaussian window sigma as a fraction of ``size_px``.

    Returns
    -------
    dict of str to Path
        Condition -> folder.
    """
    from PIL import Image

    named = _named_positions(positions)
    if int(n_per_position) < 1 or int(size_px) < 8 or not 0 < sigma_fraction <= 1:
        raise TopoInputError("need n_per_position >= 1, size_px >= 8, 0 < sigma_fraction <= 1")
    size = int(size_px)
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    sigma = float(sigma_fraction)
    out, root = {}, Path(out_dir)
    for name, (x, y) in named.items():
        window = np.exp(-((grid[None, :] - x) ** 2 + (grid[:, None] - y) ** 2) / (2 * sigma**2))
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(int(n_per_position)):
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode()), i])
            noise = rng.uniform(-1.0, 1.0, size=(size, size))
            gray = np.clip(np.rint(127.5 + 127.5 * noise * window), 0, 255).astype(np.uint8)
            target = folder / f"{name}_{i:04d}.png"
            tmp = _atomic_path(target)
            Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB").save(
                tmp, format="PNG"
            )
            os.replace(tmp, target)
        out[name] = folder
    return out


def _named_positions(positions) -> dict[str, tuple[float, float]]:
    if isinstance(positions, Mapping):
        items = [(str(k), v) for k, v in positions.items()]
    else:
        items = [(_position_name(v), v) for v in positions]
    if not items:
        raise TopoInputError("retinotopy needs at least one position")
    named = {}
    for name, xy in items:
        if len(xy) != 2 or not all(0.0 <= float(v) <= 1.0 for v in xy):
            raise TopoInputError(f"position {name!r} must be (x, y) in [0, 1], got {xy!r}")
        if not _IDENT_RE.match(name) or name in named:
            raise TopoInputError(f"position name {name!r} must be a unique identifier")
        named[name] = (float(xy[0]), float(xy[1]))
    return named


def generate_tonotopy(
    out_dir: str | Path,
    frequencies_hz: Sequence[float],
    n_per_frequency: int = 20,
    duration_s: float = 0.5,
    sample_rate: int = 16000,
    seed: int = 0,
    *,
    amplitude: float = 0.5,
    jitter: float = 0.1,
    ramp_s: float = 0.01,
) -> dict[str, Path]:
    """Write pure tones across frequencies as 16-bit mono WAV files.

    Tone ``i`` of frequency ``f`` has a random start phase and an amplitude jittered by
    ``+-jitter`` (relative), both drawn from ``(seed, f, i)``; raised-cosine on/off ramps of
    ``ramp_s`` avoid clicks. The same arguments give the same bytes.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; one sub-folder ``tone_<f>hz`` per frequency is written.
    frequencies_hz : sequence of float
        Tone frequencies, each in (0, sample_rate / 2).
    n_per_frequency : int
        Tones per frequency.
    duration_s : float
        Tone duration in seconds.
    sample_rate : int
        Samples per second.
    seed : int
        Random seed.
    amplitude, jitter, ramp_s : float
        Peak amplitude (<= 0.9), relative amplitude jitter, ramp length in seconds.

    Returns
    -------
    dict of str to Path
        Condition -> folder.
    """
    import soundfile as sf

    freqs = [float(f) for f in frequencies_hz]
    sr = int(sample_rate)
    n = int(round(float(duration_s) * sr))
    if not freqs or int(n_per_frequency) < 1 or sr < 1 or n < 2:
        raise TopoInputError("need frequencies, n_per_frequency >= 1 and a positive duration")
    if any(not 0 < f < sr / 2 for f in freqs):
        raise TopoInputError(f"frequencies must lie in (0, {sr / 2:g}) Hz for rate {sr}")
    if not 0 < amplitude * (1 + jitter) <= 1 or not 0 <= jitter < 1:
        raise TopoInputError("amplitude * (1 + jitter) must be in (0, 1] and jitter in [0, 1)")
    names = [tone_name(f) for f in freqs]
    if len(set(names)) != len(names):
        raise TopoInputError("duplicate frequencies")
    t = np.arange(n, dtype=np.float64) / sr
    n_ramp = min(int(round(ramp_s * sr)), n // 2)
    envelope = np.ones(n)
    if n_ramp > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_ramp) / n_ramp)
        envelope[:n_ramp] = ramp
        envelope[n - n_ramp :] = ramp[::-1]
    out, root = {}, Path(out_dir)
    for f, name in zip(freqs, names, strict=True):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(int(n_per_frequency)):
            rng = np.random.default_rng([int(seed), int(round(f * 1000)), i])
            phase = rng.uniform(0.0, 2 * np.pi)
            amp = amplitude * (1.0 + jitter * rng.uniform(-1.0, 1.0))
            wave = amp * envelope * np.sin(2 * np.pi * f * t + phase)
            target = folder / f"{name}_{i:04d}.wav"
            tmp = _atomic_path(target)
            sf.write(tmp, wave, sr, subtype="PCM_16", format="WAV")
            os.replace(tmp, target)
        out[name] = folder
    return out
