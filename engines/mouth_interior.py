"""What shows inside an opened mouth: a cavity shaded from the lips into the dark, upper and lower teeth placed
from the mouth's geometry, a tongue (low for open vowels, its tip up behind the upper teeth for L and TH),
all coloured from the portrait itself so they are lit like the face.

Colours come from the photo once per portrait (`InteriorPalette`): the cavity and tongue from the lips' own
colour darkened, the teeth from the photo's own teeth where the portrait shows them, otherwise a tooth white
scaled to the face's brightness. Painting covers only the opening, with a soft one-pixel edge, and fades out
towards the corners so no dark wedge or colour fringe appears where the lips meet.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import face
from .fields import smoothstep

TOOTH_ALBEDO = np.array([0.93, 0.90, 0.83], np.float32)  # a little warmer than paper white
SKIN_REFERENCE_LUMA = 150.0  # skin this bright (0..255) gets the tooth albedo at full brightness
UPPER_TEETH_HALF_WIDTH = 0.36  # of the mouth width, each side of the centre
LOWER_TEETH_HALF_WIDTH = 0.27
INCISOR_WIDTHS = (0.105, 0.085, 0.075)  # central, lateral, canine: fractions of the mouth width
CORNER_FADE = 0.1  # the last share of the mouth's half-width at each corner where painting fades out


@dataclass(frozen=True)
class InteriorPalette:
    cavity: np.ndarray  # RGB float32: the darkest depth of the mouth
    lip_shadow: np.ndarray  # RGB: the inner lip surface, just inside the opening
    tongue: np.ndarray  # RGB
    teeth: np.ndarray  # RGB: lit tooth colour
    photo_teeth: bool  # the teeth colour was taken from the portrait's own teeth


def _masked_mean(image: np.ndarray, polygon: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    if exclude is not None:
        cv2.fillPoly(mask, [np.round(exclude).astype(np.int32)], 0)
    count = int(mask.sum())
    if count == 0:
        return np.zeros(3, np.float32), 0
    return image[mask.astype(bool)].astype(np.float32).mean(axis=0), count


def palette_from_portrait(portrait: np.ndarray, landmarks: np.ndarray) -> InteriorPalette:
    """The mouth's colours, measured on the portrait: lips, skin brightness and (when visible) teeth."""
    inner = landmarks[face.UPPER_INNER_LIP + face.LOWER_INNER_LIP[1:-1]]
    lips, _ = _masked_mean(portrait, landmarks[face.LIPS_OUTER], exclude=inner)
    cheeks = [landmarks[[50, 101, 118, 117, 123, 147, 187, 205]], landmarks[[280, 330, 347, 346, 352, 376, 411, 425]]]
    skin = np.mean([_masked_mean(portrait, cheek)[0] for cheek in cheeks], axis=0)
    light = float(np.clip((0.299 * skin[0] + 0.587 * skin[1] + 0.114 * skin[2]) / SKIN_REFERENCE_LUMA, 0.35, 1.2))
    # A grey or faded photo gets a grey mouth: every tint below is scaled by how colourful the skin is.
    chroma = float(np.clip((skin.max() - skin.min()) / max(float(skin.max()), 1.0) / 0.25, 0, 1))

    def tinted(tint) -> np.ndarray:
        tint = np.asarray(tint, np.float32)
        return tint.mean() + chroma * (tint - tint.mean())

    teeth = tinted(TOOTH_ALBEDO) * 235.0 * light
    photo_teeth = False
    # The photo's own teeth: the bright, low-saturation pixels between the inner lips, if there are enough.
    mouth_width = float(np.linalg.norm(landmarks[face.MOUTH_CORNERS[0]] - landmarks[face.MOUTH_CORNERS[1]]))
    mask = np.zeros(portrait.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
    inside = portrait[mask.astype(bool)].astype(np.float32)
    if len(inside) > 0.02 * mouth_width**2:
        luma = inside @ np.array([0.299, 0.587, 0.114], np.float32)
        spread = inside.max(axis=1) - inside.min(axis=1)
        bright = inside[(luma > np.percentile(luma, 60)) & (spread < 0.35 * np.maximum(luma, 1))]
        if len(bright) > 0.01 * mouth_width**2:
            teeth, photo_teeth = bright.mean(axis=0), True
    # The lips' own colour darkened: the inner lip surface in shadow, the cavity deep red-brown, the tongue.
    lip_shadow = 0.5 * lips
    cavity = np.maximum(0.17 * lips * tinted([1.0, 0.55, 0.6]) / tinted([1.0, 0.55, 0.6]).max(), 6.0)
    tongue = 0.72 * lips * tinted([1.0, 0.82, 0.85]) + 0.08 * skin
    return InteriorPalette(cavity.astype(np.float32), lip_shadow.astype(np.float32), tongue.astype(np.float32),
                           np.clip(teeth, 0, 255).astype(np.float32), photo_teeth)


@dataclass(frozen=True)
class InteriorPose:
    """Per frame: which parts show. All 0..1."""

    upper_teeth: float  # 1 paints upper teeth (a portrait showing its own teeth keeps them instead)
    lower_teeth: float  # 1 paints lower teeth (a portrait showing its own keeps them: they drop with the jaw)
    tongue_tip: float  # L / TH: tongue tip raised behind the upper teeth
    labiodental: float  # F / V: the upper teeth fill the opening down to the lower lip


def paint_interior(region: np.ndarray, rows: np.ndarray, columns: np.ndarray, top: np.ndarray, bottom: np.ndarray,
                   center_x: float, mouth_width: float, palette: InteriorPalette, pose: InteriorPose) -> None:
    """Paint, in place, the opening between the curves `top` and `bottom` (output rows per column of `columns`;
    NaN outside the mouth) into `region` (RGB, or RGBA whose alpha is left alone), whose pixel rows are `rows`
    (absolute y of each row)."""
    valid = np.flatnonzero(np.isfinite(top) & np.isfinite(bottom) & (bottom > top))
    if valid.size == 0:
        return
    c0, c1 = valid[0], valid[-1] + 1
    top, bottom = top[c0:c1].astype(np.float32), bottom[c0:c1].astype(np.float32)
    row_lo = int(max(0, np.floor(np.nanmin(top)) - rows[0] - 1))
    row_hi = int(min(len(rows), np.ceil(np.nanmax(bottom)) - rows[0] + 2))
    if row_hi <= row_lo:
        return
    mw = mouth_width
    y = rows[row_lo:row_hi, None].astype(np.float32)
    gap = np.maximum(bottom - top, 0.0)
    across = ((columns[c0:c1] - center_x) / (0.5 * mw)).astype(np.float32)  # -1 .. 1 corner to corner
    widest = float(gap.max())
    from_top, from_bottom = y - top, bottom - y
    # Coverage of each pixel by the opening (soft one-pixel edge), fading out at the corners.
    corners = smoothstep(1.0, 1.0 - CORNER_FADE, np.abs(across))
    edge_distance = np.minimum(from_top, from_bottom)
    coverage = np.clip(edge_distance + 0.5, 0, 1) * np.clip(gap / 1.5, 0, 1) * corners
    # Cavity: the lips' inner surface at the edges, dark in the depth; darker towards the corners.
    centre = np.clip(1 - across**2, 0, 1)
    depth = np.clip(edge_distance / (np.maximum(0.3 * gap, 1.5) + 0.03 * mw), 0, 1)
    depth = depth * depth * (3 - 2 * depth)
    depth = depth * (0.75 + 0.25 * centre)
    colour = palette.lip_shadow + (palette.cavity - palette.lip_shadow) * depth[..., None]

    # Tongue: a low mound in an open mouth; the tip raised behind the upper teeth for L / TH.
    if widest > 0.1 * mw or pose.tongue_tip > 0.01:
        colour = _tongue(colour, y, top, bottom, gap, across, mw, palette, pose)
    if pose.lower_teeth > 0 and widest > 0.14 * mw:
        colour = _lower_teeth(colour, y, bottom, gap, across, centre, mw, palette, pose)
    if pose.upper_teeth > 0:
        colour = _upper_teeth(colour, y, top, gap, across, centre, mw, palette, pose)

    target = region[row_lo:row_hi, c0:c1, :3].astype(np.float32)
    alpha = coverage[..., None]
    region[row_lo:row_hi, c0:c1, :3] = np.clip(target + (colour - target) * alpha + 0.5, 0, 255).astype(np.uint8)


def _over(colour: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return colour + (layer - colour) * alpha[..., None]


def _tongue(colour, y, top, bottom, gap, across, mw, palette, pose):
    mound_height = np.minimum(0.45 * gap, 0.16 * mw) * np.sqrt(np.clip(1 - (across / 0.6) ** 2, 0, 1))
    below_top = y - (bottom - mound_height)
    mound = (np.clip(below_top / np.maximum(0.25 * mound_height, 1.0), 0, 1)
             * np.clip((gap - 0.1 * mw) / (0.1 * mw), 0, 1) * (mound_height > 0.5))
    tongue_alpha = mound
    if pose.tongue_tip != 0:  # (at 0 the tip's alpha is 0 and the mound's, never below 0, stays)
        # The tip rises from the floor of the mouth to just under the upper teeth's edge in the middle.
        tip_half = 0.42
        tip_reach = top + np.minimum(0.12 * mw, 0.55 * gap) * 0.5
        tip_top = tip_reach + (bottom - tip_reach) * np.clip((across / tip_half) ** 2, 0, 1.5)
        tip = np.clip(y - tip_top + 0.5, 0, 1) * pose.tongue_tip
        tongue_alpha = np.maximum(mound, tip * np.clip(gap / (0.04 * mw), 0, 1))
    # Lit from the front: brightest at its top, darker down into the lower lip's shadow.
    tongue_shade = 0.95 - 0.3 * np.clip(below_top / np.maximum(mound_height, 1.0), 0, 1)
    return _over(colour, palette.tongue * tongue_shade[..., None], tongue_alpha)


def _lower_teeth(colour, y, bottom, gap, across, centre, mw, palette, pose):
    from_bottom = bottom - y
    # Lower teeth: a thin row above the lower lip, in the upper lip's shadow, once the mouth is well open.
    lower_len = np.minimum(0.05 * mw, 0.16 * gap) * np.sqrt(np.clip(1 - (across / LOWER_TEETH_HALF_WIDTH * 0.5) ** 2, 0, 1))
    lower_alpha = (np.clip(lower_len - from_bottom + 0.5, 0, 1) * np.clip((gap - 0.14 * mw) / (0.08 * mw), 0, 1)
                   * smoothstep(LOWER_TEETH_HALF_WIDTH * 2, LOWER_TEETH_HALF_WIDTH * 2 - 0.15, np.abs(across)))
    lower_shade = (0.62 + 0.2 * centre)[None, :] * (0.8 + 0.2 * np.clip(from_bottom / np.maximum(lower_len, 1), 0, 1))
    return _over(colour, palette.teeth * (lower_shade * _tooth_gaps(across * 1.25, mw)[None, :])[..., None], lower_alpha)


def _upper_teeth(colour, y, top, gap, across, centre, mw, palette, pose):
    from_top = y - top
    # Upper teeth hang from the top edge; F / V lets them reach the lower lip.
    teeth_len = np.minimum(0.12 * mw, 0.55 * gap) * (1 - pose.labiodental) + (gap + 1) * pose.labiodental
    reach = np.clip(1 - (across / (2 * UPPER_TEETH_HALF_WIDTH)) ** 2, 0, 1)
    upper_alpha = (np.clip(teeth_len * np.sqrt(reach) - from_top + 0.5, 0, 1) * np.clip(gap / (0.04 * mw), 0, 1)
                   * smoothstep(2 * UPPER_TEETH_HALF_WIDTH, 2 * UPPER_TEETH_HALF_WIDTH - 0.2, np.abs(across))
                   * pose.upper_teeth)
    # Lighting: brightest at the front centre, shaded towards the corners and under the lip.
    teeth_shade = (0.7 + 0.3 * centre)[None, :] * (0.82 + 0.18 * np.clip(from_top / (0.35 * np.maximum(teeth_len, 1)), 0, 1))
    teeth_shade = teeth_shade * _tooth_gaps(across, mw)[None, :]
    return _over(colour, palette.teeth * teeth_shade[..., None], upper_alpha)


def _tooth_gaps(across: np.ndarray, mouth_width: float) -> np.ndarray:
    """Faint darker lines between incisors, laterals and canines (multiplier per column)."""
    half = np.abs(across) * 0.5  # distance from the centre as a fraction of the mouth width
    edges = np.cumsum((0.0,) + INCISOR_WIDTHS)
    darkening = np.zeros_like(half, dtype=np.float32)
    line = max(0.006, 0.9 / max(mouth_width, 1.0))  # about a pixel wide
    for edge in edges:
        darkening = np.maximum(darkening, np.exp(-(((half - edge) / line) ** 2)))
    return 1 - 0.22 * darkening
