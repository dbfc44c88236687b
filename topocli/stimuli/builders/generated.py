"""Generated training material: gratings, coloured noise and shapes; noise bursts, chirps and
tone complexes.

Every function draws all its parameters from the ``rng`` it is given (the build seeds it from
``(seed, condition, original)``), so the same seed gives the same array. Images are float64
RGB on the 0-255 scale, ``size`` square; sounds are float64 mono waveforms at
:data:`~topocli.stimuli.builders.audio.RATE` (the build normalises both like every other
stimulus). Nothing here resembles a localizer stimulus: the images are colour, full-field and
unwindowed (the retinotopy patches are grey, Gaussian-windowed white noise), and no tone or
tone-complex component lies within a quarter octave of a tonotopy localizer frequency
(:func:`allowed_frequency`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from topocli.stimuli.builders import audio, images

#: Components of generated tones keep at least this distance (octaves) from every tonotopy
#: localizer frequency, so no training tone is a localizer tone.
GUARD_OCTAVES = 0.25
#: Frequency range of generated tone components (Hz): inside the 16 kHz Nyquist band.
TONE_RANGE_HZ = (100.0, 7500.0)


# ---------------------------------------------------------------------- images
def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _contrasting_colours(rng: np.random.Generator, min_step: float = 64.0):
    # two colours of about equal luminance would make a grating uniform after luminance
    # matching (nothing to scale): redraw until their luminances differ by min_step
    while True:
        a, b = _colour(rng), _colour(rng)
        if abs(float(images.luminance(a - b))) >= min_step:
            return a, b


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    return np.meshgrid(coords, coords, indexing="xy")


def grating(rng: np.random.Generator, size: int = images.SIZE) -> tuple[np.ndarray, str]:
    """A sine or square-wave grating (or a plaid of two) between two random colours.

    Returns
    -------
    (ndarray of shape (size, size, 3), str)
        The image and a one-line description of its parameters, for ``PROVENANCE.csv``.
    """
    x, y = _grid(size)
    n_components = int(rng.integers(1, 3))
    profile = np.zeros_like(x)
    parts = []
    for _ in range(n_components):
        theta = rng.uniform(0.0, np.pi)
        cycles = float(np.exp(rng.uniform(np.log(2.0), np.log(40.0))))
        phase = rng.uniform(0.0, 2 * np.pi)
        wave = np.sin(2 * np.pi * cycles * (x * np.cos(theta) + y * np.sin(theta)) + phase)
        square = bool(rng.integers(2))
        profile += np.sign(wave) if square else wave
        parts.append(
            f"{'square' if square else 'sine'} {cycles:.1f} cycles/image at "
            f"{np.degrees(theta):.0f} deg"
        )
    t = (profile / n_components + 1.0) / 2.0
    a, b = _contrasting_colours(rng)
    img = a + (b - a) * t[..., None]
    return img, "grating: " + " + ".join(parts)


def coloured_noise(rng: np.random.Generator, size: int = images.SIZE) -> tuple[np.ndarray, str]:
    """1/f^alpha noise, each channel with its own field and exponent (alpha 0.5-3)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    alphas = rng.uniform(0.5, 3.0, size=3)
    mix = rng.dirichlet(np.ones(3), size=3)  # correlated channels: colours, not RGB confetti
    fields = []
    for alpha in alphas:
        spectrum = np.fft.fft2(rng.standard_normal((size, size))) / radius ** (alpha / 2.0)
        spectrum[0, 0] = 0.0
        field = np.real(np.fft.ifft2(spectrum))
        fields.append(field / (field.std() or 1.0))
    stacked = np.stack(fields, axis=-1) @ mix.T
    img = 128.0 + 40.0 * stacked
    return img, "1/f noise, channel exponents " + ", ".join(f"{a:.2f}" for a in alphas)


def shapes(rng: np.random.Generator, size: int = images.SIZE) -> tuple[np.ndarray, str]:
    """3-14 ellipses, rectangles and polygons of random colours on a random-colour ground."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in _colour(rng)))
    draw = ImageDraw.Draw(canvas)
    n = int(rng.integers(3, 15))
    kinds = []
    for _ in range(n):
        kind = ("ellipse", "rectangle", "polygon")[int(rng.integers(3))]
        fill = tuple(int(v) for v in _colour(rng))
        cx, cy = rng.uniform(0, size, size=2)
        r = rng.uniform(0.05, 0.35) * size
        if kind == "polygon":
            k = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=k))
            radii = r * rng.uniform(0.4, 1.0, size=k)
            pts = [
                (float(cx + q * np.cos(a)), float(cy + q * np.sin(a)))
                for a, q in zip(angles, radii, strict=True)
            ]
            draw.polygon(pts, fill=fill)
        else:
            w, h = r * rng.uniform(0.3, 1.0, size=2)
            box = [float(cx - w), float(cy - h), float(cx + w), float(cy + h)]
            (draw.ellipse if kind == "ellipse" else draw.rectangle)(box, fill=fill)
        kinds.append(kind)
    img = np.asarray(canvas, dtype=np.float64)
    return img, f"{n} shapes ({', '.join(sorted(set(kinds)))})"


BACKGROUNDS = {"grating": grating, "noise": coloured_noise, "shapes": shapes}


def on_background(
    rgba: np.ndarray, rng: np.random.Generator, size: int = images.SIZE
) -> tuple[np.ndarray, str]:
    """Composite an RGBA cut-out (0-255) at a random scale and place on a generated ground.

    Returns
    -------
    (ndarray, str)
        The image and a description (ground kind, scale, position).
    """
    kind = sorted(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    ground, _ = BACKGROUNDS[kind](rng, size)
    alpha = rgba[..., 3] > 12
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        from topocli.errors import TopoInputError

        raise TopoInputError("image is fully transparent")
    cut = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = rng.uniform(0.45, 0.9)
    h, w = cut.shape[:2]
    factor = scale * size / max(h, w)
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    cut = _resize_rgba(cut, nw, nh)
    top = int(rng.integers(0, size - nh + 1))
    left = int(rng.integers(0, size - nw + 1))
    a = cut[..., 3:4] / 255.0
    region = ground[top : top + nh, left : left + nw]
    ground[top : top + nh, left : left + nw] = cut[..., :3] * a + region * (1.0 - a)
    return ground, f"on a generated {kind} ground, {scale:.2f} of the side at ({left}, {top})"


def _resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(rgba[..., c], dtype=np.float32), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            ),
            dtype=np.float64,
        )
        for c in range(4)
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 255.0)


# ---------------------------------------------------------------------- sounds
def allowed_frequency(freq_hz: float, avoid_hz: Sequence[float]) -> bool:
    """Whether a generated tone component may use ``freq_hz``: inside :data:`TONE_RANGE_HZ`
    and at least :data:`GUARD_OCTAVES` from every frequency of ``avoid_hz``."""
    lo, hi = TONE_RANGE_HZ
    if not lo <= freq_hz <= hi:
        return False
    return all(abs(np.log2(freq_hz / f)) >= GUARD_OCTAVES for f in avoid_hz)


def _draw_frequency(rng: np.random.Generator, avoid_hz: Sequence[float]) -> float:
    lo, hi = np.log(TONE_RANGE_HZ[0]), np.log(TONE_RANGE_HZ[1])
    while True:  # the allowed bands cover about half the log range: few draws
        f = float(np.exp(rng.uniform(lo, hi)))
        if allowed_frequency(f, avoid_hz):
            return f


def _length(rng: np.random.Generator, rate: int) -> int:
    return int(round(rng.uniform(1.0, 3.0) * rate))


def noise_burst(rng: np.random.Generator, rate: int = audio.RATE) -> tuple[np.ndarray, str]:
    """White, pink or brown noise, band-passed at random, in 1-6 bursts over 1-3 s."""
    from scipy.signal import butter, sosfilt

    n = _length(rng, rate)
    colour = ("white", "pink", "brown")[int(rng.integers(3))]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    f[0] = f[1]
    spectrum *= {"white": 1.0, "pink": f**-0.5, "brown": f**-1.0}[colour]
    x = np.fft.irfft(spectrum, n)
    lo = float(np.exp(rng.uniform(np.log(50.0), np.log(2000.0))))
    hi = min(float(lo * np.exp(rng.uniform(np.log(2.0), np.log(16.0)))), 0.45 * rate)
    x = sosfilt(butter(4, [lo, hi], btype="bandpass", fs=rate, output="sos"), x)
    bursts = int(rng.integers(1, 7))
    gate = np.zeros(n)
    edges = np.sort(rng.choice(n, size=2 * bursts, replace=False))
    for a, b in edges.reshape(-1, 2):
        if b - a > rate // 50:
            gate[a:b] = np.hanning(b - a)
    if not gate.any():
        gate[:] = 1.0
    return x * gate, f"{colour} noise, {lo:.0f}-{hi:.0f} Hz, {bursts} burst(s)"


def chirp(rng: np.random.Generator, rate: int = audio.RATE) -> tuple[np.ndarray, str]:
    """A linear or exponential frequency sweep (up or down) between 80 Hz and 7.5 kHz."""
    n = _length(rng, rate)
    t = np.arange(n) / rate
    f0, f1 = np.exp(rng.uniform(np.log(80.0), np.log(7500.0), size=2))
    dur = n / rate
    if bool(rng.integers(2)):
        k = np.log(f1 / f0) / dur
        phase = 2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k if abs(k) > 1e-9 else 2 * np.pi * f0 * t
        kind = "exponential"
    else:
        phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t**2)
        kind = "linear"
    return np.sin(phase), f"{kind} chirp {f0:.0f} -> {f1:.0f} Hz"


def tone_complex(
    rng: np.random.Generator, avoid_hz: Sequence[float], rate: int = audio.RATE
) -> tuple[np.ndarray, str]:
    """A pure tone or a complex of 2-6 components, harmonic or not, with an AM or onset
    envelope; every component passes :func:`allowed_frequency` against ``avoid_hz``."""
    n = _length(rng, rate)
    t = np.arange(n) / rate
    k = int(rng.integers(1, 7))
    if k > 1 and bool(rng.integers(2)):
        # harmonic: keep only the harmonics of f0 that are allowed
        f0 = float(np.exp(rng.uniform(np.log(TONE_RANGE_HZ[0]), np.log(1200.0))))
        comps = [h * f0 for h in range(1, 4 * k) if allowed_frequency(h * f0, avoid_hz)][:k]
        kind = f"harmonic complex, f0 {f0:.0f} Hz"
        if not comps:
            comps = [_draw_frequency(rng, avoid_hz)]
            kind = "pure tone"
    else:
        comps = [_draw_frequency(rng, avoid_hz) for _ in range(k)]
        kind = "pure tone" if k == 1 else "inharmonic complex"
    x = np.zeros(n)
    for f in comps:
        x += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    rate_am = rng.uniform(0.0, 12.0)
    x *= 1.0 - 0.5 * rng.uniform(0.0, 1.0) * (1.0 - np.cos(2 * np.pi * rate_am * t)) / 2.0
    freqs = ", ".join(f"{f:.0f}" for f in comps)
    return x, f"{kind}: components {freqs} Hz, AM {rate_am:.1f} Hz"
