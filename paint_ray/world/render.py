"""Drawing primitives for the embedded world: shapes, stroke-drawn digits, words, backgrounds.

Everything draws onto 32x32 RGB canvases with PIL and takes a numpy Generator, so a seed fixes every pixel.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "star")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 230, 50),
    "purple": (160, 60, 220),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 220, 230),
}
BACKGROUNDS = ("noise", "stripes", "checker", "plain")

# Digits as pen strokes in a unit box (x right, y down); jittered per sample so they look handwritten.
DIGIT_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5, 0.0), (0.15, 0.2), (0.1, 0.5), (0.15, 0.8), (0.5, 1.0), (0.85, 0.8), (0.9, 0.5), (0.85, 0.2), (0.5, 0.0)]],
    1: [[(0.3, 0.2), (0.55, 0.0), (0.55, 1.0)]],
    2: [[(0.15, 0.25), (0.4, 0.0), (0.75, 0.05), (0.85, 0.3), (0.15, 1.0), (0.9, 1.0)]],
    3: [[(0.15, 0.1), (0.7, 0.0), (0.8, 0.25), (0.4, 0.48), (0.85, 0.7), (0.7, 0.98), (0.15, 0.92)]],
    4: [[(0.7, 1.0), (0.7, 0.0), (0.1, 0.65), (0.95, 0.65)]],
    5: [[(0.85, 0.0), (0.2, 0.0), (0.15, 0.45), (0.6, 0.4), (0.85, 0.7), (0.6, 1.0), (0.15, 0.9)]],
    6: [[(0.75, 0.0), (0.3, 0.3), (0.15, 0.7), (0.4, 1.0), (0.8, 0.85), (0.75, 0.55), (0.2, 0.6)]],
    7: [[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]],
    8: [[(0.5, 0.48), (0.2, 0.25), (0.5, 0.0), (0.8, 0.25), (0.5, 0.48), (0.15, 0.75), (0.5, 1.0), (0.85, 0.75), (0.5, 0.48)]],
    9: [[(0.8, 0.4), (0.5, 0.5), (0.2, 0.3), (0.45, 0.0), (0.8, 0.15), (0.8, 0.4), (0.7, 1.0)]],
}


def background(rng: np.random.Generator, kind: str) -> Image.Image:
    """A dark textured background, so shapes and colours are the signal and texture is nuisance."""
    base = rng.integers(0, 50, size=3)
    if kind == "noise":
        arr = base + rng.integers(0, 40, size=(SIZE, SIZE, 3))
    elif kind == "stripes":
        period = int(rng.integers(3, 7))
        phase = (np.arange(SIZE)[:, None] + np.arange(SIZE)[None, :] * int(rng.integers(0, 2))) // period % 2
        arr = np.broadcast_to(base, (SIZE, SIZE, 3)) + phase[..., None] * rng.integers(10, 35, size=3)
    elif kind == "checker":
        cell = int(rng.integers(3, 8))
        idx = (np.arange(SIZE)[:, None] // cell + np.arange(SIZE)[None, :] // cell) % 2
        arr = np.broadcast_to(base, (SIZE, SIZE, 3)) + idx[..., None] * rng.integers(10, 35, size=3)
    else:
        arr = np.broadcast_to(base, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jitter_color(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    rgb = np.array(COLORS[color]) + rng.integers(-25, 26, size=3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: str, color: str,
               cx: float, cy: float, radius: float) -> None:
    """Draw one filled shape of the given colour centred at (cx, cy)."""
    fill = _jitter_color(rng, color)
    r = radius
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    elif shape == "cross":
        w = max(1.0, r * 0.35)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            ang = -math.pi / 2 + k * math.pi / 5
            rad = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def place_objects(rng: np.random.Generator, n: int, radius: float, margin: float = 1.0,
                  tries: int = 200) -> list[tuple[float, float]]:
    """Centres for n non-overlapping objects of the given radius (shrinks the spacing if it must)."""
    centres: list[tuple[float, float]] = []
    lo, hi = radius + margin, SIZE - radius - margin
    spacing = 2 * radius + 1
    for _ in range(tries * n):
        if len(centres) == n:
            break
        c = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        if all((c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2 >= spacing ** 2 for p in centres):
            centres.append(c)
        elif _ % (tries) == tries - 1:
            spacing *= 0.9
    while len(centres) < n:  # degenerate fallback, never hit for the sizes the world uses
        centres.append((float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))))
    return centres


def scene(rng: np.random.Generator, objects: list[tuple[str, str]], radius: float,
          bg: str | None = None) -> np.ndarray:
    """An image holding the given (shape, colour) objects, scattered without overlap."""
    img = background(rng, bg or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    draw = ImageDraw.Draw(img)
    for (shape, color), (cx, cy) in zip(objects, place_objects(rng, len(objects), radius)):
        r = radius * float(rng.uniform(0.9, 1.1))
        draw_shape(draw, rng, shape, color, cx, cy, r)
    return np.asarray(img)


def handwritten_digit(rng: np.random.Generator, digit: int, box: int = 24) -> np.ndarray:
    """A stroke-drawn digit, white on black, centred like the scikit-learn digits (box px in a 32 px frame).

    Drawn at 4x and averaged down so strokes are soft-edged, then blurred a little like scanned ink.
    """
    scale = 4
    canvas = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    off = (SIZE - box) / 2
    shear = float(rng.uniform(-0.25, 0.25))
    sx, sy = float(rng.uniform(0.55, 0.85)), float(rng.uniform(0.8, 1.0))
    width = int(rng.integers(2, 4)) * scale
    for stroke in DIGIT_STROKES[digit]:
        pts = []
        for x, y in stroke:
            x = 0.5 + (x - 0.5) * sx + shear * (y - 0.5) + float(rng.normal(0, 0.03))
            y = 0.5 + (y - 0.5) * sy + float(rng.normal(0, 0.03))
            pts.append(((off + x * box) * scale, (off + y * box) * scale))
        draw.line(pts, fill=255, width=width, joint="curve")
    small = canvas.resize((SIZE, SIZE), Image.BOX)
    arr = np.asarray(small, dtype=np.float32)
    arr = arr * float(rng.uniform(0.75, 1.0))
    return np.repeat(np.clip(arr, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _glyph_rows(size: int) -> tuple[int, int]:
    """Top and bottom rows any word can reach (tallest and deepest glyphs), relative to the text origin."""
    _, top, _, bottom = _font(size).getbbox("Mgjlyt|")
    return top, bottom


def write_text(image: np.ndarray, text: str, color: tuple[int, int, int] = (255, 255, 255),
               position: str = "bottom", size: int = 8,
               box_color: tuple[int, int, int] | None = (0, 0, 0)) -> np.ndarray:
    """Render text onto a copy of an image in a band at the top or bottom (used for words and typographic
    attacks). Only the band's rows (text_band) change, whatever the word."""
    img = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(img)
    font = _font(size)
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    x = max(0, (img.width - (right - left)) // 2) - left
    band = text_band(img.height, position, size)
    if box_color is not None:
        draw.rectangle([0, band.start, img.width - 1, band.stop - 1], fill=box_color)
    # draw on a band-sized canvas so no glyph can spill outside the band
    strip = img.crop((0, band.start, img.width, band.stop))
    ImageDraw.Draw(strip).text((x, 1 - _glyph_rows(size)[0]), text, fill=color, font=font)
    img.paste(strip, (0, band.start))
    return np.asarray(img)


def text_band(height: int, position: str, size: int = 8) -> slice:
    """Rows of the canvas that write_text may touch: the glyphs' full height plus a pixel above and below."""
    top, bottom = _glyph_rows(size)
    h = bottom - top + 2
    return slice(height - h, height) if position == "bottom" else slice(0, h)
