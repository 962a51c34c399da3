"""The synthetic world the test bed learns: coloured shapes on plain or gradient backgrounds.

Why a world made by code: the CPU test bed needs models that *learned* something (their
images follow the prompt, their denoisers are not decided at step 0) and judges that can
check it, with no dataset to download. Every scene is a small record of discrete
attributes (what a caption names and a judge checks) plus nuisance variables (jitter,
rotation, shade, gradient direction) that only the noise seed decides, so generation is a
real distribution and not a lookup table.

- 6 shapes that stay distinct at 32 px, 8 well separated colours, a 3x3 grid of positions,
  3 sizes (the smallest >= 10 px at 32 px), 3 background colours, plain or gradient.
- One object per scene; two (small or medium, in grid cells two apart) in a quarter.
- Scenes are drawn at 4x and downsampled (antialiasing), at 32x32 or 64x64: the same scene
  at both sizes is the same picture.
- Everything is a pure function of (seed, index): `scene_at(seed, i)` gives the same scene
  on every machine, and `render` gives the same bytes (PIL drawing, no threads).
- A fixed 1/16 of the single-object attribute combinations is held out of every training
  split (`is_held_out`); the evaluation prompt set (`evaluation_items`) is drawn from them.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (215, 35, 35),
    "orange": (245, 140, 25),
    "yellow": (240, 220, 40),
    "green": (45, 165, 60),
    "cyan": (40, 200, 215),
    "blue": (40, 70, 215),
    "purple": (135, 50, 185),
    "pink": (245, 135, 200),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUNDS = {"white": (232, 232, 232), "grey": (128, 128, 128), "black": (28, 28, 28)}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
BACKGROUND_KINDS = ("plain", "gradient")
SIZES = {"small": (0.32, 0.36), "medium": (0.44, 0.48), "large": (0.58, 0.62)}  # box side / image side
SIZE_NAMES = tuple(SIZES)
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
_POSITION_PHRASE = {"left": "on the left", "right": "on the right", "center": "in the center"}
TWO_OBJECT_FRACTION = 0.25
SUPERSAMPLE = 4
RESOLUTIONS = (32, 64)
NUM_CLASSES = len(SHAPES) * len(COLOURS)  # DiT's classes: shape x colour
HELD_OUT_MODULUS = 16


@dataclass(frozen=True)
class Obj:
    """One object: the attributes a caption names, then the nuisance a seed decides."""

    shape: str
    colour: str
    position: str
    size: str
    # nuisance, all in [-1, 1] or fractions: never named, never judged
    jitter: tuple[float, float] = (0.0, 0.0)
    size_frac: float = 0.5  # where in its size class's range
    rotation: float = 0.0  # degrees
    shade: tuple[int, int, int] = (0, 0, 0)

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {position_phrase(self.position)}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    kind: str  # plain or gradient
    gradient_angle: float = 0.0  # radians, nuisance
    gradient_depth: float = 0.0  # nuisance

    def caption(self) -> str:
        things = " and ".join(o.phrase() for o in self.objects)
        ground = "background" if self.kind == "plain" else "gradient background"
        return f"{things} on a {self.background} {ground}"

    @property
    def main(self) -> Obj:
        return self.objects[0]

    def class_label(self) -> int:
        """DiT's class: shape x colour of the (first) object, 0 .. NUM_CLASSES - 1."""
        return class_label(self.main.shape, self.main.colour)


def class_label(shape: str, colour: str) -> int:
    return SHAPES.index(shape) * len(COLOURS) + COLOUR_NAMES.index(colour)


def class_attributes(label: int) -> tuple[str, str]:
    return SHAPES[label // len(COLOURS)], COLOUR_NAMES[label % len(COLOURS)]


def position_phrase(position: str) -> str:
    return _POSITION_PHRASE.get(position, f"at the {position}")


def words() -> list[str]:
    """Every word the captions and edit instructions of this world use (the text vocabulary)."""
    out: list[str] = []
    for text in [*SHAPES, *COLOURS, *BACKGROUNDS, *SIZES, *POSITIONS,
                 "a on the at in and background gradient make turn it into move to"]:
        out.extend(w for w in text.split() if w not in out)
    return out


# ------------------------------------------------------------------------------ sampling
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in key])


def _sample_obj(rng: np.random.Generator, position: str | None = None, sizes=SIZE_NAMES) -> Obj:
    return Obj(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=COLOUR_NAMES[rng.integers(len(COLOURS))],
        position=position or POSITIONS[rng.integers(len(POSITIONS))],
        size=sizes[rng.integers(len(sizes))],
        jitter=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))),
        size_frac=float(rng.uniform(0, 1)),
        rotation=float(rng.uniform(-12, 12)),
        shade=tuple(int(v) for v in rng.integers(-10, 11, size=3)),
    )


def attributes(scene: Scene) -> tuple:
    """The named attributes of a single-object scene (what the hold-out is keyed on)."""
    o = scene.main
    return (o.shape, o.colour, o.position, o.size, scene.background, scene.kind)


def is_held_out(scene: Scene) -> bool:
    """True for the 1/16 of single-object attribute combinations no training split contains."""
    if len(scene.objects) != 1:
        return False
    digest = hashlib.sha256("|".join(attributes(scene)).encode()).digest()
    return digest[0] % HELD_OUT_MODULUS == 0


def sample_scene(rng: np.random.Generator, two_objects: bool | None = None) -> Scene:
    """A random scene; `two_objects=None` draws it with probability TWO_OBJECT_FRACTION."""
    if two_objects is None:
        two_objects = bool(rng.uniform() < TWO_OBJECT_FRACTION)
    background = BACKGROUND_NAMES[rng.integers(len(BACKGROUNDS))]
    kind = BACKGROUND_KINDS[rng.integers(2)]
    angle, depth = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.12, 0.2))
    if not two_objects:
        objects = (_sample_obj(rng),)
    else:
        first = (0, 1, 2, 3, 5, 6, 7, 8)[int(rng.integers(8))]  # the centre has no cell two apart
        far = [c for c in range(9) if max(abs(c // 3 - first // 3), abs(c % 3 - first % 3)) == 2]
        second = far[int(rng.integers(len(far)))]
        small = ("small", "medium")
        objects = (_sample_obj(rng, POSITIONS[first], small), _sample_obj(rng, POSITIONS[second], small))
    return Scene(objects, background, kind, angle, depth)


def scene_at(seed: int, index: int, *, two_objects: bool | None = None, train: bool = True) -> Scene:
    """Scene number `index` of the stream `seed`; training streams skip held-out combinations."""
    rng = _rng(seed, index)
    while True:
        scene = sample_scene(rng, two_objects)
        if not train or not is_held_out(scene):
            return scene


# ------------------------------------------------------------------------------- drawing
def _shape_points(shape: str, cx: float, cy: float, side: float, rotation: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape whose bounding box side is `side`, rotated about its centre."""
    h = side / 2
    if shape == "square":
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
        pts = [(x * 0.9, y * 0.9) for x, y in pts]
    elif shape == "diamond":
        pts = [(0, -h), (h, 0), (0, h), (-h, 0)]
    elif shape == "triangle":
        pts = [(0, -h), (h, h * 0.85), (-h, h * 0.85)]
    elif shape == "cross":
        a = h * 0.34
        pts = [(-a, -h), (a, -h), (a, -a), (h, -a), (h, a), (a, a), (a, h), (-a, h), (-a, a), (-h, a), (-h, -a),
               (-a, -a)]
    else:
        raise ValueError(f"{shape} is not a polygon")
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def object_box(obj: Obj, size: int) -> tuple[float, float, float]:
    """Centre x, centre y and side of an object's box, in pixels of a `size` image."""
    lo, hi = SIZES[obj.size]
    side = (lo + (hi - lo) * obj.size_frac) * size
    row, col = divmod(POSITIONS.index(obj.position), 3)
    margin = side / 2 + size / 32
    centre = []
    for cell, jit in ((col, obj.jitter[0]), (row, obj.jitter[1])):
        nominal = (cell + 0.5) / 3 * size + jit * size * 0.03
        centre.append(min(max(nominal, margin), size - margin))
    return centre[0], centre[1], side


def _background(scene: Scene, size: int) -> np.ndarray:
    """Plain colour, or a linear ramp of up to `gradient_depth` x 255 levels (darker for white
    and grey, lighter for black) along a random direction: the means stay far apart."""
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float64)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    if scene.kind == "gradient":
        y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        ramp = x * math.cos(scene.gradient_angle) + y * math.sin(scene.gradient_angle)  # in [-0.71, 0.71]
        sign = 1.0 if scene.background == "black" else -1.0
        img = img + sign * 255.0 * scene.gradient_depth * (ramp / math.sqrt(2) + 0.5)[..., None]
    return img


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as a uint8 HxWx3 array, drawn at SUPERSAMPLE x and box-downsampled."""
    big = size * SUPERSAMPLE
    canvas = Image.fromarray(np.round(_background(scene, big)).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        fill = tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(COLOURS[obj.colour], obj.shade))
        cx, cy, side = object_box(obj, big)
        if obj.shape in ("circle", "ring"):
            r = side / 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            if obj.shape == "ring":
                hole = r * 0.5
                # the hole shows the background behind the ring
                mask = Image.new("L", canvas.size, 0)
                ImageDraw.Draw(mask).ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=255)
                ground = Image.fromarray(np.round(_background(scene, big)).astype(np.uint8))
                canvas.paste(ground, (0, 0), mask)
                draw = ImageDraw.Draw(canvas)
        else:
            draw.polygon(_shape_points(obj.shape, cx, cy, side, obj.rotation), fill=fill)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX))


def render_batch(scenes, size: int = 32) -> np.ndarray:
    """uint8 [N, H, W, 3]."""
    return np.stack([render(s, size) for s in scenes])


def to_tensor_range(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW in [-1, 1] (the VAE's input range)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# -------------------------------------------------------------------------------- edits
EDIT_KINDS = ("colour", "shape", "background", "size")


@dataclass(frozen=True)
class Edit:
    source: Scene
    instruction: str
    target: Scene
    kind: str


def make_edit(scene: Scene, rng: np.random.Generator, kind: str | None = None) -> Edit:
    """An instruction that changes one attribute of a single-object scene; nuisance is kept."""
    obj = scene.main
    kind = kind or EDIT_KINDS[rng.integers(len(EDIT_KINDS))]
    if kind == "colour":
        new = _other(rng, COLOUR_NAMES, obj.colour)
        return Edit(scene, f"make the {obj.shape} {new}", replace(scene, objects=(replace(obj, colour=new),)), kind)
    if kind == "shape":
        new = _other(rng, SHAPES, obj.shape)
        return Edit(scene, f"turn the {obj.shape} into a {new}", replace(scene, objects=(replace(obj, shape=new),)),
                    kind)
    if kind == "background":
        new = _other(rng, BACKGROUND_NAMES, scene.background)
        return Edit(scene, f"make the background {new}", replace(scene, background=new), kind)
    if kind == "size":
        new = _other(rng, SIZE_NAMES, obj.size)
        return Edit(scene, f"make the {obj.shape} {new}", replace(scene, objects=(replace(obj, size=new),)), kind)
    raise ValueError(f"edit kind {kind!r}; known: {', '.join(EDIT_KINDS)}")


def _other(rng: np.random.Generator, names, current: str) -> str:
    choices = [n for n in names if n != current]
    return choices[int(rng.integers(len(choices)))]


def edit_at(seed: int, index: int, kind: str | None = None, train: bool = True) -> Edit:
    """Edit number `index` of stream `seed`: single-object source and target, neither held out if `train`."""
    rng = _rng(seed, index, 7)
    while True:
        edit = make_edit(sample_scene(rng, two_objects=False), rng, kind)
        if not train or not (is_held_out(edit.source) or is_held_out(edit.target)):
            return edit


# ---------------------------------------------------------------------- evaluation set
@dataclass(frozen=True)
class EvalItem:
    """One evaluation prompt: a caption, its DiT class, and an edit, all from held-out scenes."""

    caption: str
    class_label: int
    scene: Scene
    edit: Edit


EVAL_SEED = 90210


def evaluation_items(n: int = 64, seed: int = EVAL_SEED) -> list[EvalItem]:
    """The test bed's default prompt set: `n` held-out single-object scenes, in a fixed order.

    Every caption is a held-out attribute combination (no training split contains it), and
    each item's edit uses a held-out source scene; edit kinds cycle colour, shape, background,
    size so any prefix is balanced.
    """
    out: list[EvalItem] = []
    index = 0
    while len(out) < n:
        rng = _rng(seed, index)
        index += 1
        scene = sample_scene(rng, two_objects=False)
        if not is_held_out(scene) or any(item.caption == scene.caption() for item in out):
            continue
        edit = make_edit(scene, rng, EDIT_KINDS[len(out) % len(EDIT_KINDS)])
        out.append(EvalItem(scene.caption(), scene.class_label(), scene, edit))
    return out


def perturbed(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one named attribute of its first object (or its background) changed:
    a hard negative caption for the contrastive judge."""
    obj = scene.main
    which = ("shape", "colour", "position", "size", "background")[int(rng.integers(5))]
    if which == "background":
        return replace(scene, background=_other(rng, BACKGROUND_NAMES, scene.background))
    names = {"shape": SHAPES, "colour": COLOUR_NAMES, "position": POSITIONS, "size": SIZE_NAMES}[which]
    if which == "position" and len(scene.objects) > 1:
        names = tuple(p for p in names if p != scene.objects[1].position)
    new = replace(obj, **{which: _other(rng, names, getattr(obj, which))})
    return replace(scene, objects=(new, *scene.objects[1:]))
