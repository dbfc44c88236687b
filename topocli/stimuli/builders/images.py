"""Image normalisation for built sets: grey compositing, squares, luminance matching, scrambles.

Every function takes and returns float64 RGB arrays of shape ``(H, W, 3)`` on the 0-255 scale
until :func:`png_bytes` quantises them, so the transforms compose without rounding in between.
Luminance is the Rec. 709 weighting of the (gamma-encoded) channels, as the SHINE toolbox and
fLoc do: matching its mean and standard deviation (RMS contrast) across a set removes the
simplest low-level cue that could separate the categories.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from topocli.errors import TopoInputError

GREY = 128.0
SIZE = 256
TARGET_MEAN = 128.0
TARGET_RMS = 48.0
_LUMA = np.array([0.2126, 0.7152, 0.0722])
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of an RGB array (same scale as the input)."""
    return np.asarray(img, dtype=np.float64) @ _LUMA


def read_cutout(path: Path, grey: float = GREY) -> np.ndarray:
    """Read an image; transparent parts are composited on mid-grey and cropped away.

    Parameters
    ----------
    path : Path
        Any image Pillow reads (PNG with alpha for the cut-outs, JPEG for photographs).
    grey : float
        Background level, 0-255.

    Returns
    -------
    ndarray of shape (H, W, 3), float64
        The image cropped to the bounding box of its opaque pixels.

    Raises
    ------
    TopoInputError
        A file Pillow cannot decode, or one with no opaque pixel.
    """
    return composite(read_rgba(path), grey, path)


def read_rgba(path: Path) -> np.ndarray:
    """Read an image as float64 RGBA (0-255), alpha kept.

    Raises
    ------
    TopoInputError
        A file Pillow cannot decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return np.asarray(im.convert("RGBA"), dtype=np.float64)
    except (UnidentifiedImageError, Image.DecompressionBombError, *_DECODE_ERRORS) as exc:
        raise TopoInputError(f"cannot read image ({exc.__class__.__name__})", path) from None


def composite(rgba: np.ndarray, grey: float = GREY, path: Path | None = None) -> np.ndarray:
    """Composite an RGBA array (0-255) on ``grey`` and crop to its opaque bounding box."""
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + grey * (1.0 - alpha)
    rows = np.flatnonzero(alpha[..., 0].max(axis=1) > 0.05)
    cols = np.flatnonzero(alpha[..., 0].max(axis=0) > 0.05)
    if rows.size == 0 or cols.size == 0:
        raise TopoInputError("image is fully transparent", path)
    return rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def pad_square(img: np.ndarray, margin: float = 0.06, grey: float = GREY) -> np.ndarray:
    """Centre an image on a grey square with ``margin`` (fraction of the side) around it."""
    h, w = img.shape[:2]
    side = int(np.ceil(max(h, w) * (1.0 + 2.0 * margin)))
    out = np.full((side, side, 3), grey)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def crop_square(img: np.ndarray, position: float = 0.5, scale: float = 1.0) -> np.ndarray:
    """A square crop of side ``scale * min(H, W)``, slid to ``position`` (0-1) on the long axis."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * scale)))
    top = int(round((h - side) * (position if h > w else 0.5)))
    left = int(round((w - side) * (position if w >= h else 0.5)))
    return img[top : top + side, left : left + side]


def resize(img: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Resize to ``size`` x ``size`` with Lanczos filtering (per channel, in float)."""
    from PIL import Image

    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F").resize(
                (size, size), Image.Resampling.LANCZOS
            ),
            dtype=np.float64,
        )
        for c in range(3)
    ]
    return np.stack(chans, axis=-1)


def match_luminance(
    img: np.ndarray,
    mean: float = TARGET_MEAN,
    rms: float = TARGET_RMS,
    iterations: int = 6,
) -> np.ndarray:
    """Set the luminance mean and RMS contrast (standard deviation) of an image.

    One affine map of all three channels, repeated because clipping to 0-255 moves the
    statistics again (the iterative scheme of SHINE's ``lumMatch``).

    Raises
    ------
    TopoInputError
        A uniform image (no contrast to scale).
    """
    out = np.asarray(img, dtype=np.float64)
    for _ in range(iterations):
        y = luminance(out)
        sd = float(y.std())
        if sd < 1e-6:
            raise TopoInputError("image is uniform (no contrast)")
        out = np.clip((out - y.mean()) * (rms / sd) + mean, 0.0, 255.0)
    return out


def phase_scramble(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomise the Fourier phase of an image, keeping each channel's amplitude spectrum.

    The same random phase (the phase of the FFT of white noise, which is Hermitian, so the
    result stays real) is added to every channel: colours stay coherent, and each channel's
    amplitude spectrum, hence its power at every spatial frequency and orientation, is kept.
    No clipping here: the result may leave 0-255 until :func:`match_luminance`.
    """
    img = np.asarray(img, dtype=np.float64)
    noise_phase = np.angle(np.fft.fft2(rng.standard_normal(img.shape[:2])))
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        spectrum = np.fft.fft2(img[..., c])
        scrambled = np.abs(spectrum) * np.exp(1j * (np.angle(spectrum) + noise_phase))
        out[..., c] = np.real(np.fft.ifft2(scrambled))
    return out


def render_glyph(text: str, font_path: Path, size: int = SIZE) -> np.ndarray | None:
    """Render one emoji (a string of code points) from a colour font on mid-grey.

    Returns
    -------
    ndarray of shape (size, size, 3) or None
        None when the font has no glyph for ``text`` (it renders as the font's .notdef box or
        as nothing), so the caller can skip it and say why.
    """
    from PIL import Image, ImageDraw

    font = _emoji_font(str(font_path))

    def draw(s: str) -> np.ndarray:
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((8, 8), s, font=font, embedded_color=True)
        return np.asarray(canvas, dtype=np.float64)

    rgba = draw(text)
    if rgba[..., 3].max() == 0 or np.array_equal(rgba, draw("\U0010fffd")):
        return None
    return resize(pad_square(composite(rgba)), size)


def _emoji_font(path: str):
    from PIL import ImageFont

    # Noto Color Emoji is a CBDT bitmap font with one strike at 109 px
    for size in (109, 96, 64):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    raise TopoInputError("cannot open the emoji font", path)


def render_word(img: np.ndarray, word: str, font_path: Path, level: float = 0.0) -> np.ndarray:
    """Draw ``word`` centred on ``img`` in a bold font, about 70 % of the image wide."""
    from PIL import Image, ImageDraw, ImageFont

    side = img.shape[1]
    size = max(8, side // 4)
    font = ImageFont.truetype(str(font_path), size)
    width = font.getlength(word)
    if width > 0.7 * side:
        size = max(8, int(size * 0.7 * side / width))
        font = ImageFont.truetype(str(font_path), size)
    mask = Image.new("L", (side, img.shape[0]), 0)
    ImageDraw.Draw(mask).text((side / 2, img.shape[0] / 2), word, font=font, fill=255, anchor="mm")
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255.0
    return img * (1.0 - alpha) + level * alpha


def png_bytes(img: np.ndarray) -> bytes:
    """Quantise to 8-bit RGB and encode as PNG with no metadata (same array, same bytes)."""
    from PIL import Image

    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def image_stats(img: np.ndarray) -> dict[str, float]:
    """Low-level statistics reported per condition: luminance mean, RMS contrast, and the
    fraction of luminance power above a quarter of the Nyquist frequency."""
    y = luminance(img)
    power = np.abs(np.fft.fftshift(np.fft.fft2(y - y.mean()))) ** 2
    h, w = y.shape
    fy, fx = np.meshgrid(
        np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij"
    )
    radius = np.hypot(fy, fx)
    total = float(power.sum()) or 1.0
    return {
        "lum_mean": float(y.mean()),
        "rms_contrast": float(y.std()),
        "hf_power": float(power[radius > 0.125].sum() / total),
    }
