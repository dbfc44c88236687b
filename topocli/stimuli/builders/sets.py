"""The buildable stimulus sets: their conditions and, per condition, where candidates come from.

A condition draws from one or more *pools* (lists of :class:`Candidate`, each a recipe that
makes one normalised stimulus from one original). ``mix="interleave"`` takes the pools in turn
(a balanced mix of sources: the voice set's speakers and synthesiser); ``mix="fill"`` uses the
first pool and the next only when it runs short (photographs first, then emoji). Which
candidates are used depends on the seed only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topocli.stimuli.builders import audio, generated, images
from topocli.stimuli.builders.partition import keeps
from topocli.stimuli.builders.sources import SOURCES, Source, SourceStatus

DEFAULT_PER_CONDITION = 48
_TONES = ("", "\U0001f3fb", "\U0001f3fc", "\U0001f3fd", "\U0001f3fe", "\U0001f3ff")

# Emoji chosen by hand from the Unicode people, places and objects groups.
FACE_EMOJI = "👶 🧒 👦 👧 🧑 👱 👨 🧔 👩 🧓 👴 👵 👲 👳 🧕 👮 👷 💂 🤴 👸".split()
BODY_EMOJI = "🚶 🧍 🧎 🏃 💃 🕺 🤸 🤾 🏌 🏄 🏊 ⛹ 🏋 🚴 🤽 🧘 🧗".split()
OBJECT_EMOJI = (
    "⌚ 📱 💻 ⌨ 🖨 🖱 📷 📞 📺 📻 ⏰ 🔦 💡 🕯 🔑 🔨 🪓 ⛏ 🔧 🔩 ✂ 📎 🖊 ✏ 📏 🧲 🧪 🔭 🔬 🩺 "
    "🪑 🛏 🛋 🚪 🪞 🚽 🛁 🧴 🧹 🧺 🧻 🧽 🪣 🔒 🎒 👓 🌂 👜 👟 🎩 🧢 🎸 🎺 🥁 🎻 ⚽ 🏀 🎈 "
    "🧸 🪁 🏺 🧯 🛒 🗑 📦 ⚖ 🧭 ⏳ 🔔"
).split()
SCENE_EMOJI = (
    "🏞 🏔 ⛰ 🌋 🗻 🏕 🏖 🏜 🏝 🏟 🏛 🏗 🏘 🏚 🏠 🏡 🏢 🏣 🏤 🏥 🏦 🏨 🏩 🏪 🏫 🏬 🏭 🏯 🏰 "
    "💒 🗼 🗽 ⛪ 🕌 🛕 🕍 ⛩ 🕋 ⛲ ⛺ 🌁 🌃 🏙 🌄 🌅 🌆 🌇 🌉 🎠 🎡 🎢 🎪 🛤 🛣 🗾 🎑 🌌"
).split()
LANDSCAPE_EMOJI = "🏞 🏔 ⛰ 🌋 🗻 🏕 🏖 🏜 🏝 🌁 🌄 🌅 🌌 🎑 🗾 🌊 🌈 🌠 ⛱ 🛤 🛣".split()
BUILDING_EMOJI = (
    "🏛 🏗 🏘 🏚 🏠 🏡 🏢 🏣 🏤 🏥 🏦 🏨 🏩 🏪 🏫 🏬 🏭 🏯 🏰 💒 🗼 🗽 ⛪ 🕌 🛕 🕍 ⛩ 🕋 ⛲ 🏙 🌆 🌇 "
    "🏟 🌃 🌉 🎡 🎢 🎠 🎪 💈 🚏 🗿 ⛽ 🚥 🚦 🛖"
).split()
ANIMAL_EMOJI = (
    "🐵 🐒 🦍 🐶 🐕 🐩 🐺 🦊 🐱 🐈 🦁 🐯 🐅 🐆 🐴 🐎 🦄 🦓 🦌 🐮 🐂 🐃 🐄 🐷 🐖 🐗 🐏 🐑 🐐 "
    "🐪 🐫 🦙 🦒 🐘 🦏 🦛 🐭 🐁 🐀 🐹 🐰 🐇 🐿 🦔 🦇 🐻 🐨 🐼 🦘 🦡 🐔 🐓 🐣 🐦 🐧 🦅 🦆 🦉 "
    "🐸 🐊 🐢 🦎 🐍 🐳 🐋 🐬 🐟 🐠 🐡 🦈 🐙 🐌 🦋 🐛 🐜 🐝 🐞 🦗 🦂"
).split()
FOOD_EMOJI = (
    "🍇 🍈 🍉 🍊 🍋 🍌 🍍 🥭 🍎 🍏 🍐 🍑 🍒 🍓 🥝 🍅 🥥 🥑 🍆 🥔 🥕 🌽 🌶 🥒 🥬 🥦 🧄 🧅 🍄 "
    "🥜 🌰 🍞 🥐 🥖 🥨 🥯 🥞 🧇 🧀 🍖 🍗 🥩 🥓 🍔 🍟 🍕 🌭 🥪 🌮 🌯 🥙 🧆 🥚 🍳 🥘 🍲 🥣 🥗 "
    "🍿 🧈 🥫 🍱 🍘 🍙 🍚 🍛 🍜 🍝 🍠 🍢 🍣 🍤 🍥 🥮 🍡 🥟 🥠 🥡 🍦 🍧 🍨 🍩 🍪 🎂 🍰 🧁"
).split()
VEHICLE_EMOJI = (
    "🚂 🚃 🚄 🚅 🚆 🚇 🚈 🚉 🚊 🚝 🚞 🚋 🚌 🚍 🚎 🚐 🚑 🚒 🚓 🚔 🚕 🚖 🚗 🚘 🚙 🚚 🚛 🚜 🏎 "
    "🏍 🛵 🛺 🚲 🛴 🛹 🚨 ⛵ 🛶 🚤 🛳 ⛴ 🛥 🚢 ✈ 🛩 🛫 🛬 🪂 💺 🚁 🚟 🚠 🚡 🛰 🚀 🛸"
).split()
PLANT_EMOJI = "💐 🌸 💮 🏵 🌹 🥀 🌺 🌻 🌼 🌷 🌱 🌲 🌳 🌴 🌵 🌾 🌿 ☘ 🍀 🍁 🍂 🍃 🪴 🎋 🎍".split()

# Photographs of landscapes in mate-backgrounds (the rest of that package is abstract art,
# close-ups of flowers and textures); each gives several square crops.
LANDSCAPE_PHOTOS = ("Dune.jpg", "Storm.jpg", "GreenMeadow.jpg", "Aqua.jpg")
CROP_POSITIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us+f3", "en-gb+f4",
    "en-us+m3",
)  # fmt: skip
_NOT_NONVOCAL = re.compile(r"choir|vox|voc|burp|speech|robot", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """A recipe for one stimulus.

    Attributes
    ----------
    source : str
        Key of :data:`~topocli.stimuli.builders.sources.SOURCES`.
    original : str
        The original: a file path, an emoji (with its code points), or a text line reference.
    make : callable
        ``make(rng) -> (array, transforms)``: the normalised image (float RGB) or waveform, and
        the list of transforms applied. Raises ``TopoInputError`` for bad material.
    path : Path or None
        The original file, for its licence (DEP-5 match).
    """

    source: str
    original: str
    make: Callable
    path: Path | None = None


@dataclass(frozen=True)
class Condition:
    """One condition: its pools of candidates and how they are mixed."""

    name: str
    pools: Callable  # (statuses) -> list[list[Candidate]]
    mix: str = "interleave"
    note: str = ""


@dataclass(frozen=True)
class StimulusSetDef:
    """A buildable set.

    Attributes
    ----------
    name, modality, description : str
    conditions : tuple of Condition
    required, optional : tuple of str
        Source keys the build needs / uses when present.
    generator : str or None
        ``"retinotopy"`` / ``"tonotopy"``: built by the project's generators instead.
    duration_s : float or None
        Fixed duration of every sound (audio sets).
    notes : tuple of str
        Method notes written into the built set's README.
    usage : str
        A command that reads the built folder (``DIR`` stands for it), for the README.
    greyscale : bool
        Images as luminance only (fLoc's stimuli are greyscale): no colour cue is left.
    split : str
        ``"localizer"`` (draws no original reserved for training) or ``"train"`` (draws only
        reserved originals and generated material); see
        :mod:`~topocli.stimuli.builders.partition`.
    default_per_condition : int
        Stimuli per condition when a build names no count.
    """

    name: str
    modality: str
    description: str
    conditions: tuple[Condition, ...] = ()
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    generator: str | None = None
    duration_s: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    usage: str = ""
    greyscale: bool = False
    split: str = "localizer"
    default_per_condition: int = DEFAULT_PER_CONDITION

    @property
    def condition_names(self) -> list[str]:
        if self.generator is not None:
            from topocli.stimuli.localizers import load_localizer

            return list(load_localizer(self.generator).conditions)
        return [c.name for c in self.conditions]

    def sources(self) -> list[Source]:
        return [SOURCES[k] for k in (*self.required, *self.optional)]


# ---------------------------------------------------------------------- image recipes
_IMG_STEPS = [
    f"resized {images.SIZE}x{images.SIZE} (Lanczos)",
    f"luminance mean {images.TARGET_MEAN:g}, RMS contrast {images.TARGET_RMS:g}",
]


def _cutout(path: Path) -> Callable:
    def make(rng):
        img = images.pad_square(images.read_cutout(path))
        img = images.match_luminance(images.resize(img))
        return img, [
            "composited on grey 128",
            "cropped to opaque box",
            "padded square",
            *_IMG_STEPS,
        ]

    return make


def _photo_crop(path: Path, position: float, scale: float = 0.8) -> Callable:
    def make(rng):
        img = images.crop_square(images.read_cutout(path), position, scale)
        img = images.match_luminance(images.resize(img))
        return img, [f"square crop {scale:g} of the short side at {position:g}", *_IMG_STEPS]

    return make


def _glyph(text: str, font: Path) -> Callable:
    def make(rng):
        img = images.render_glyph(text, font)
        if img is None:
            from topocli.errors import TopoInputError

            raise TopoInputError(f"the font has no glyph for {_codepoints(text)}", font)
        return images.match_luminance(img), [
            "rendered from the colour font at 109 px on grey 128",
            "padded square",
            *_IMG_STEPS,
        ]

    return make


def _word_on_scrambled(base: Candidate, word: str, font: Path) -> Callable:
    def make(rng):
        img, _ = base.make(rng)
        scrambled = images.match_luminance(images.phase_scramble(img, rng))
        out = images.match_luminance(images.render_word(scrambled, word, font))
        return out, [
            f"object from {base.original} rendered as above",
            "phase-scrambled (Fourier phase randomised, amplitude spectrum kept)",
            f"word {word!r} drawn in DejaVu Sans Bold, black, centred",
            *_IMG_STEPS[1:],
        ]

    return make


def _codepoints(text: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in text)


def _emoji_pool(statuses, chars, tones: bool = False) -> list[Candidate]:
    st = statuses.get("emoji")
    if st is None or not st.present:
        return []
    variants = [c + t for c in chars for t in (_TONES if tones else ("",))]
    return [
        Candidate("emoji", f"{v} ({_codepoints(v)})", _glyph(v, st.path), st.path) for v in variants
    ]


def _stamp_files(statuses, folders, exclude=("cartoon", "toys"), split="localizer") -> list[Path]:
    st = statuses.get("tuxpaint")
    if st is None or not st.present:
        return []
    out = []
    for folder in folders:
        base = st.path / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.png")):
            rel = path.relative_to(st.path).parts
            if any(part in exclude for part in rel[:-1]):
                continue
            if folder == "town" and len(rel) > 1 and rel[1] in ("roadsigns", "flags"):
                continue
            if keeps(st, path, split):
                out.append(path)
    return out


def _stamps(statuses, folders, exclude=("cartoon", "toys"), split="localizer") -> list[Candidate]:
    return [
        Candidate("tuxpaint", str(path), _cutout(path), path)
        for path in _stamp_files(statuses, folders, exclude, split)
    ]


def _landscape_photos(statuses) -> list[Candidate]:
    st = statuses.get("mate")
    if st is None or not st.present:
        return []
    out = []
    for name in LANDSCAPE_PHOTOS:
        path = st.path / name
        if path.is_file() and keeps(st, path, "localizer"):
            for pos in CROP_POSITIONS:
                make = _photo_crop(path, pos, 0.7)
                out.append(Candidate("mate", f"{path} (crop at {pos:g})", make, path))
    return out


def _words(statuses) -> list[str]:
    text = _text_lines(statuses, "language/sentences")
    seen: dict[str, None] = {}
    for line in text:
        for w in re.findall(r"[A-Za-z]+", line):
            if 4 <= len(w) <= 8:
                seen.setdefault(w.lower(), None)
    return sorted(seen)


def _words_pool(statuses) -> list[list[Candidate]]:
    objects = _emoji_pool(statuses, OBJECT_EMOJI)
    font = statuses["dejavu"].path
    words = _words(statuses)
    out = []
    for i, base in enumerate(objects):
        word = words[(i * 7919) % len(words)]  # a fixed, spread-out pairing
        out.append(
            Candidate(
                "emoji+dejavu",
                f"{base.original} + word {word!r}",
                _word_on_scrambled(base, word, font),
                base.path,
            )
        )
    return [out]


# ---------------------------------------------------------------------- audio recipes
def _sound_file(path: Path, duration: float) -> Callable:
    def make(rng):
        x, steps = audio.fit(audio.read_mono(path), duration)
        return x, [f"mono {audio.RATE} Hz", *steps]

    return make


def _speech(text: str, voice: str, program: Path, duration: float) -> Callable:
    def make(rng):
        x, steps = audio.fit(audio.espeak(text, voice, program), duration)
        return x, [f"espeak-ng voice {voice}, 165 wpm", f"mono {audio.RATE} Hz", *steps]

    return make


def _quilted(text: str, voice: str, program: Path, duration: float) -> Callable:
    def make(rng):
        speech = audio.trim_silence(audio.espeak(text, voice, program))
        q, _ = audio.quilt(speech, rng)
        x, steps = audio.fit(q, duration)
        return x, [
            f"espeak-ng voice {voice}, 165 wpm",
            "quilted: 60 ms segments reordered to match the original's cochleagram change "
            "at boundaries (Overath et al. 2015, simplified)",
            *steps,
        ]

    return make


def _text_lines(statuses, folder: str) -> list[str]:
    base = statuses["topo-text"].path / folder
    lines = []
    for path in sorted(base.glob("*.txt")):
        lines.extend(s.strip() for s in path.read_text(encoding="utf-8").splitlines())
    return [s for s in lines if s]


def _spoken(statuses, folder: str, duration: float, voices=("en-us",)) -> list[Candidate]:
    program = statuses["espeak-ng"].path
    return [
        Candidate(
            "espeak-ng+topo-text",
            f"{folder} line {i + 1} ({voices[i % len(voices)]})",
            _speech(line, voices[i % len(voices)], program, duration),
        )
        for i, line in enumerate(_text_lines(statuses, folder))
    ]


def _quilts(statuses, folder: str, duration: float) -> list[Candidate]:
    program = statuses["espeak-ng"].path
    return [
        Candidate(
            "espeak-ng+topo-text",
            f"{folder} line {i + 1} (en-us, quilted)",
            _quilted(line, "en-us", program, duration),
        )
        for i, line in enumerate(_text_lines(statuses, folder))
    ]


def _asterisk(statuses, duration: float, split: str = "localizer") -> list[Candidate]:
    pools = []
    for lang in ("en", "fr", "es", "it", "ru"):
        st = statuses.get(f"asterisk-{lang}")
        if st is None or not st.present:
            continue
        pools.append(
            [
                Candidate(f"asterisk-{lang}", str(p), _sound_file(p, duration), p)
                for p in sorted(st.path.rglob("*.wav"))
                if keeps(st, p, split)
            ]
        )
    return interleave(pools, None)


def _tuxpaint_sounds(
    statuses, duration: float, spoken: bool, split: str = "localizer"
) -> list[Candidate]:
    st = statuses.get("tuxpaint")
    if st is None or not st.present:
        return []
    out = []
    for p in sorted(st.path.rglob("*.ogg")):
        is_desc = "_desc" in p.stem
        top = p.relative_to(st.path).parts[0]
        # the voice localizer keeps people / symbols effects out of non_vocal (some are
        # voices); training takes every reserved effect
        held_out = split == "localizer" and top in ("people", "symbols")
        if spoken != is_desc or (not spoken and held_out) or not keeps(st, p, split):
            continue
        out.append(Candidate("tuxpaint", str(p), _sound_file(p, duration), p))
    return out


def _sonic_pi(statuses, duration: float, split: str = "localizer") -> list[Candidate]:
    st = statuses.get("sonic-pi")
    if st is None or not st.present:
        return []
    return [
        Candidate("sonic-pi", str(p), _sound_file(p, duration), p)
        for p in sorted(st.path.glob("*.flac"))
        if (split == "train" or not _NOT_NONVOCAL.search(p.stem)) and keeps(st, p, split)
    ]


def interleave(pools: list[list], rng: np.random.Generator | None) -> list:
    """Shuffle each pool (when ``rng`` is given) and take one from each in turn."""
    shuffled = [list(p) if rng is None else [p[i] for i in rng.permutation(len(p))] for p in pools]
    out = []
    for i in range(max((len(p) for p in shuffled), default=0)):
        out.extend(p[i] for p in shuffled if i < len(p))
    return out


# ---------------------------------------------------------------------- training recipes
_TRAIN_S = 2.0
#: espeak-ng voices reading the training text: the voice localizer's eight and four more
TRAIN_VOICES = (*VOICES, "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc", "en-us+f2")
#: candidates per generated kind: more than a default build draws, so the seed picks
N_GENERATED = 200
#: square crops of each reserved wallpaper: (position along the long side, scale)
TRAIN_CROPS = tuple((p, s) for s in (0.45, 0.8) for p in (0.0, 0.25, 0.5, 0.75, 1.0))
GENERATED_IMAGES = ("grating", "noise", "shapes")
GENERATED_SOUNDS = ("noise_burst", "chirp", "tone_complex")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _stamp_on_ground(path: Path) -> Callable:
    def make(rng):
        img, how = generated.on_background(images.read_rgba(path), rng)
        return images.match_luminance(img), [
            "cut-out (alpha kept), scaled and placed " + how,
            _IMG_STEPS[1],
        ]

    return make


def _generated_image(kind: str) -> Callable:
    def make(rng):
        img, how = generated.BACKGROUNDS[kind](rng)
        return images.match_luminance(img), [how, _IMG_STEPS[1]]

    return make


def _generated_sound(kind: str, duration: float) -> Callable:
    def make(rng):
        if kind == "tone_complex":
            x, how = generated.tone_complex(rng, tonotopy_frequencies())
        else:
            x, how = getattr(generated, kind)(rng)
        x, steps = audio.fit(x, duration)
        return x, [how, f"mono {audio.RATE} Hz", *steps]

    return make


def tonotopy_frequencies() -> list[float]:
    """The tonotopy localizer's tone frequencies (its TOML), which generated tones avoid."""
    from topocli.stimuli.localizers import load_localizer

    return [float(f) for f in (load_localizer("tonotopy").generator or {})["frequencies_hz"]]


def _generated(kinds, make, what: str) -> list[list[Candidate]]:
    return [
        [
            Candidate("topo-generated", f"generated {what} {kind} {i:04d}", make(kind))
            for i in range(N_GENERATED)
        ]
        for kind in kinds
    ]


def _train_photos(statuses) -> list[Candidate]:
    st = statuses.get("mate-all")
    if st is None or not st.present:
        return []
    out = []
    for path in sorted(st.path.rglob("*")):
        if path.suffix.lower() not in _IMAGE_SUFFIXES or not keeps(st, path, "train"):
            continue
        for pos, scale in TRAIN_CROPS:
            make = _photo_crop(path, pos, scale)
            out.append(Candidate("mate-all", f"{path} (crop {scale:g} at {pos:g})", make, path))
    return out


def _train_images(statuses) -> list[list[Candidate]]:
    """Reserved stamps on grey, then reserved wallpaper crops, then a random mix of reserved
    stamps on generated grounds and generated gratings, noise and shapes."""
    files = _stamp_files(statuses, [""], exclude=(), split="train")
    on_grey = [Candidate("tuxpaint", str(p), _cutout(p), p) for p in files]
    on_ground = [
        Candidate("tuxpaint+topo-generated", f"{p} (on a generated ground)", _stamp_on_ground(p), p)
        for p in files
    ]
    mixed = on_ground + [
        c for pool in _generated(GENERATED_IMAGES, _generated_image, "image") for c in pool
    ]
    return [on_grey, _train_photos(statuses), mixed]


def _train_speech(statuses, duration: float) -> list[Candidate]:
    st = statuses.get("topo-corpus")
    program = statuses["espeak-ng"].path
    if st is None or not st.present:
        return []
    out = []
    for path in sorted(st.path.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            voice = TRAIN_VOICES[len(out) % len(TRAIN_VOICES)]
            out.append(
                Candidate(
                    "espeak-ng+topo-corpus",
                    f"corpus/train/{path.name} line {i} ({voice})",
                    _speech(line.strip(), voice, program, duration),
                )
            )
    return out


def _train_sounds(statuses) -> list[list[Candidate]]:
    """Eight pools taken in turn: reserved prompts, spoken names, corpus speech, reserved
    music samples and sound effects, and three kinds of generated sound."""
    d = _TRAIN_S
    return [
        _asterisk(statuses, d, split="train"),
        _tuxpaint_sounds(statuses, d, spoken=True, split="train"),
        _train_speech(statuses, d),
        _sonic_pi(statuses, d, split="train"),
        _tuxpaint_sounds(statuses, d, spoken=False, split="train"),
        *_generated(GENERATED_SOUNDS, lambda k: _generated_sound(k, d), "sound"),
    ]


# ---------------------------------------------------------------------- the sets
_VOICE_S = 2.0
_STORY_S = 12.0


_PARTITION_NOTE = (
    "Disjoint from the localizer sets by construction: an original file of tuxpaint, MATE, "
    "asterisk or sonic-pi is reserved for training when the first 8 bytes of the SHA-256 of "
    "its installed path below usr/share are 0 modulo 4 (the four landscape photographs of "
    "categories-visual excepted: topocli.stimuli.builders.partition); localizer sets never "
    "draw a reserved original and training sets draw nothing else, for every seed and count."
)


def _definitions() -> dict[str, StimulusSetDef]:
    emoji_note = (
        "Debian carries too few photographs of faces, bodies and scenes for 48 each, so every "
        "emfl-visual condition is rendered from Noto Color Emoji in the same style (faces and "
        "bodies in the six skin-tone variants); objects are emoji objects and words are drawn "
        "over phase-scrambled object emoji. As in fLoc, the images are greyscale (Rec. 709 "
        "luminance in all three channels), so colour cannot separate the categories."
    )
    sets = [
        StimulusSetDef(
            "emfl-visual",
            "image",
            "fLoc-style visual categories for the emfl_visual localizer: faces, bodies, "
            "scenes, objects and words on phase-scrambled objects",
            (
                Condition("faces", lambda s: [_emoji_pool(s, FACE_EMOJI, tones=True)]),
                Condition("bodies", lambda s: [_emoji_pool(s, BODY_EMOJI, tones=True)]),
                Condition("scenes", lambda s: [_emoji_pool(s, SCENE_EMOJI)]),
                Condition("objects", lambda s: [_emoji_pool(s, OBJECT_EMOJI)]),
                Condition("words_scr_objects", _words_pool),
            ),
            required=("emoji", "dejavu", "topo-text"),
            notes=(emoji_note,),
            usage="topo localize --model efficientnet-lite0 -l emfl_visual --stimuli DIR",
            greyscale=True,
        ),
        StimulusSetDef(
            "categories-visual",
            "image",
            "Object categories for topo screen: Tux Paint photographic cut-outs (composited "
            "on grey), landscape photographs, topped up with emoji where photographs are few",
            (
                Condition(
                    "animals",
                    lambda s: [_stamps(s, ["animals"]), _emoji_pool(s, ANIMAL_EMOJI)],
                    "fill",
                ),
                Condition(
                    "food", lambda s: [_stamps(s, ["food"]), _emoji_pool(s, FOOD_EMOJI)], "fill"
                ),
                Condition(
                    "vehicles",
                    lambda s: [
                        _stamps(s, ["vehicles", "military/vehicles"]),
                        _emoji_pool(s, VEHICLE_EMOJI),
                    ],
                    "fill",
                ),
                Condition(
                    "plants",
                    lambda s: [_stamps(s, ["plants"]), _emoji_pool(s, PLANT_EMOJI)],
                    "fill",
                ),
                Condition(
                    "household",
                    lambda s: [_stamps(s, ["household"]), _emoji_pool(s, OBJECT_EMOJI)],
                    "fill",
                ),
                Condition(
                    "town",
                    lambda s: [_stamps(s, ["town"]), _emoji_pool(s, BUILDING_EMOJI)],
                    "fill",
                ),
                Condition(
                    "landscapes",
                    lambda s: [_landscape_photos(s), _emoji_pool(s, LANDSCAPE_EMOJI)],
                    "fill",
                ),
                Condition(
                    "people",
                    lambda s: [
                        _stamps(s, ["people"]),
                        _emoji_pool(s, FACE_EMOJI + BODY_EMOJI, tones=True),
                    ],
                    "fill",
                ),
            ),
            required=("tuxpaint",),
            optional=("mate", "emoji"),
            usage="topo screen --model efficientnet-lite0 --stimuli DIR (or DIR/animals)",
            notes=(
                "Photographs first (Tux Paint cut-outs without the cartoon and toy folders; "
                "landscapes: four mate-backgrounds photographs, six overlapping square crops "
                "each), "
                "then emoji of the same category when a condition has fewer photographs "
                "than asked; the per-condition source mix is in the table below.",
            ),
        ),
        StimulusSetDef(
            "voice",
            "audio",
            "Voice localizer: vocal (speech of telephone prompts in five languages, spoken "
            "names in many languages, synthesised speech) vs non-vocal (music samples, "
            "sound effects)",
            (
                Condition(
                    "vocal",
                    lambda s: [
                        _asterisk(s, _VOICE_S),
                        _tuxpaint_sounds(s, _VOICE_S, spoken=True),
                        _spoken(s, "language/sentences", _VOICE_S, VOICES),
                    ],
                ),
                Condition(
                    "non_vocal",
                    lambda s: [
                        _sonic_pi(s, _VOICE_S),
                        _tuxpaint_sounds(s, _VOICE_S, spoken=False),
                    ],
                ),
            ),
            required=("asterisk-en", "tuxpaint", "sonic-pi", "espeak-ng", "topo-text"),
            optional=("asterisk-fr", "asterisk-es", "asterisk-it", "asterisk-ru"),
            duration_s=_VOICE_S,
            usage="topo localize --model whisper-tiny -l voice --stimuli DIR",
            notes=(
                "vocal takes the asterisk prompts (languages in turn), Tux Paint's spoken "
                "stamp names and espeak-ng sentences in eight voices in turn; non_vocal takes "
                "Sonic Pi samples (without choir / vox / burp / robot voices) and Tux Paint "
                "sound effects (without the people and symbols folders) in turn.",
            ),
        ),
        StimulusSetDef(
            "emfl-auditory",
            "audio",
            "Spoken EMFL auditory conditions: the shipped false-belief and false-photo "
            "stories, arithmetic and nonwords read by espeak-ng, and quilted speech",
            (
                Condition("false_belief", lambda s: [_spoken(s, "tom/false_belief", _STORY_S)]),
                Condition("false_photo", lambda s: [_spoken(s, "tom/false_photo", _STORY_S)]),
                Condition("nonwords", lambda s: [_spoken(s, "language/nonwords", _STORY_S)]),
                Condition("quilted_speech", lambda s: [_quilts(s, "language/sentences", _STORY_S)]),
                Condition("math", lambda s: [_spoken(s, "md/math", _STORY_S)]),
            ),
            required=("espeak-ng", "topo-text"),
            duration_s=_STORY_S,
            usage="topo localize --model whisper-tiny -l emfl_auditory --stimuli DIR",
            notes=(
                "One voice (espeak-ng en-us, 165 words per minute) for every condition. "
                "Quilts are made from the spoken shipped sentences with 60 ms segments: a "
                "simplified Overath et al. (2015) procedure (STFT-based ERB-band "
                "cochleagram, greedy segment order matching the original's boundary change, "
                "5 ms cross-fades, no pitch-synchronous overlap-add).",
            ),
        ),
        StimulusSetDef(
            "train-visual",
            "image",
            "Training images for the topographic vision model, disjoint from every localizer "
            "set: reserved Tux Paint cut-outs (on grey and on generated grounds), crops of "
            "reserved MATE wallpapers, and generated gratings, 1/f noise and shapes",
            (Condition("images", _train_images, "fill"),),
            required=("tuxpaint", "mate-all", "topo-generated"),
            usage="topo train --model efficientnet-lite0 --data DIR --out my-topo-vision",
            notes=(
                _PARTITION_NOTE,
                "One condition, `images`: every reserved Tux Paint stamp composited on grey "
                "(all folders, cartoons and toys included), then ten square crops (scales "
                "0.45 and 0.8, five positions) of every reserved MATE wallpaper (any folder), "
                "then a seeded random mix of the reserved stamps scaled and placed on a "
                "generated ground and of generated sine / square gratings and plaids, 1/f^a "
                "colour noise (a 0.5-3 per channel) and random ellipses, rectangles and "
                "polygons, until the count is reached. No emoji (emoji stay localizer "
                "material) and no retinotopy patches. Colour is kept.",
            ),
            split="train",
            default_per_condition=512,
        ),
        StimulusSetDef(
            "train-auditory",
            "audio",
            "Training sounds for the topographic audio model, disjoint from every localizer "
            "set: reserved telephone prompts (five languages), reserved spoken stamp names, "
            "espeak-ng reading the training text, reserved music samples and sound effects, "
            "and generated noise bursts, chirps and tone complexes",
            (Condition("sounds", _train_sounds),),
            required=("asterisk-en", "tuxpaint", "sonic-pi", "espeak-ng", "topo-generated"),
            optional=("asterisk-fr", "asterisk-es", "asterisk-it", "asterisk-ru", "topo-corpus"),
            duration_s=_TRAIN_S,
            usage="topo train --model whisper-tiny --data DIR --out my-topo-audio",
            notes=(
                _PARTITION_NOTE,
                "One condition, `sounds`, eight pools taken in turn (each shuffled by the "
                "seed): reserved asterisk prompts (languages in turn), reserved Tux Paint "
                "spoken names, espeak-ng reading lines of corpus/train (a source checkout's "
                "training text, never localizer text) in twelve English voices, reserved "
                "Sonic Pi samples (any), reserved Tux Paint sound effects (any folder), "
                "generated white / pink / brown noise bursts (band-passed), linear and "
                "exponential chirps (80 Hz - 7.5 kHz), and pure tones and harmonic or "
                "inharmonic tone complexes whose every component lies at least a quarter "
                "octave from each tonotopy localizer frequency (200, 400, ... 6400 Hz) "
                "within 100 Hz - 7.5 kHz. A pool that runs out leaves its turn to the others.",
            ),
            split="train",
            default_per_condition=400,
        ),
        StimulusSetDef(
            "retinotopy",
            "image",
            "Gaussian-windowed noise patches at nine visual-field positions (the project's "
            "generator, as in the retinotopy localizer)",
            generator="retinotopy",
        ),
        StimulusSetDef(
            "tonotopy",
            "audio",
            "Pure tones at six octave-spaced frequencies (the project's generator, as in the "
            "tonotopy localizer)",
            generator="tonotopy",
        ),
    ]
    return {s.name: s for s in sets}


SETS: dict[str, StimulusSetDef] = _definitions()


def get_set(name: str) -> StimulusSetDef:
    """The definition of a buildable set; an unknown name is an input error listing the known."""
    from topocli.errors import TopoInputError

    if name not in SETS:
        raise TopoInputError(f"unknown stimulus set {name!r}; known: {', '.join(SETS)}")
    return SETS[name]


def candidate_counts(
    definition: StimulusSetDef, statuses: dict[str, SourceStatus]
) -> dict[str, int]:
    """Candidates per condition with the sources present (an upper bound on what builds)."""
    if definition.generator is not None:
        return {c: -1 for c in definition.condition_names}  # generated: any number
    present = {k: v for k, v in statuses.items() if v.present}
    needed = set(definition.required)
    if not needed <= set(present):
        return {c.name: 0 for c in definition.conditions}
    return {c.name: sum(len(p) for p in c.pools(present)) for c in definition.conditions}
