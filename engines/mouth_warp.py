"""Opens, spreads, rounds and closes the mouth of a still portrait by warping lips, cheeks and jaw, and has the
mouth interior (engines/mouth_interior.py: shaded cavity, teeth, tongue) painted into the opening.

The lower face is warped as two layers split along the lower inner lip: the upper layer (upper lip and
whatever the portrait shows inside the mouth, such as teeth) rises a little; the lower layer (lower lip,
chin) drops. One smooth field cannot tear open at the lips, two can; the gap between them is the opening.
Below the opening the lower face drops as a block; beside it the cheeks stretch gradually down to the jaw,
so there is no tear outside the mouth. Fields are evaluated on a coarse grid and upsampled (they are
smooth), so a frame costs about a millisecond at 512 px.

Besides opening and width, three viseme channels move the lips: `press` brings upper and lower lip together
until they meet (M/B/P; it shuts even a portrait that smiles with parted lips), `labiodental` raises the upper
lip a little and the lower lip up under the upper teeth (F/V), and rounding (width < 0) pushes the lips out:
corners in, both lips thicker at the centre. The source is resampled bicubically: the mouth keeps the
portrait's sharpness, which matters most when the portrait was enlarged to the output size.
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

from . import face
from .fields import coarse_grid, pixel_grid, smoothstep, upsample
from .mouth_interior import InteriorPose, paint_interior, palette_from_portrait

GRID_STEP = 4  # pixels between coarse field samples
FIXED_POINT_ITERATIONS = 3  # inverting the forward displacement: src = dst - D(src)
OPENING_DROP = 0.36  # lower-lip drop at full opening, as a fraction of mouth width
UPPER_LIP_RISE = 0.12  # upper-lip rise, as a fraction of the drop
BORDER = 0.12  # fraction of the region over which displacement fades to zero at its edges
PRESS_UPPER_SHARE = 0.55  # share of a parted-lips portrait's gap the upper lip covers when lips press shut
PRESS_SQUEEZE = 1.4  # pressed lips close more than the gap: they meet and flatten against each other
LABIODENTAL_RISE = 0.05  # upper-lip rise for F/V, as a fraction of mouth width (shows the teeth's edge)
LABIODENTAL_TUCK = 0.015  # lower lip lifted this much (fraction of mouth width) above the upper lip's rest
ROUND_CORNERS_IN = 0.36  # rounded lips: corners move in by this share of the half-width
ROUND_NARROWING = 0.3  # rounded lips: the opening spans this much less of the mouth's width
POUT = 0.05  # rounded lips: each lip thickens by this fraction of mouth width at the centre


def _curve(points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(columns, points[order, 0], points[order, 1]).astype(np.float32)


def teeth_split_fraction(portrait: np.ndarray | None, columns: np.ndarray, upper_inner: np.ndarray,
                         lower_inner: np.ndarray) -> float:
    """Where between the inner lips (0 upper .. 1 lower) a portrait with parted lips shows the dark line
    between its upper and lower teeth; 1 when it shows none (or the lips are closed)."""
    gap = lower_inner - upper_inner
    width = columns[-1] - columns[0]
    if portrait is None or float(np.mean(gap)) < 0.04 * width:
        return 1.0
    middle = np.abs(columns - (columns[0] + columns[-1]) / 2) < 0.15 * width
    fractions = np.linspace(0.05, 0.95, 19, dtype=np.float32)
    rows = upper_inner[middle][None, :] + fractions[:, None] * gap[middle][None, :]
    cols = np.broadcast_to(columns[middle][None, :], rows.shape).astype(np.float32)
    luma = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(np.float32)
    profile = cv2.remap(luma, cols, rows.astype(np.float32), cv2.INTER_LINEAR).mean(axis=1)
    lower_part = fractions >= 0.45
    darkest = int(np.argmin(np.where(lower_part, profile, np.inf)))
    if profile[darkest] < 0.75 * float(np.median(profile)):
        return float(fractions[darkest])
    return 1.0


UPPER, LOWER = 0, -1  # layer axis of the deformation's arrays (see MouthRig._forward)


def _lip_shape(u: np.ndarray) -> np.ndarray:
    """clip(1 - u², 0, 1) ** 0.7, the same values without numpy's slow path for 0 ** 0.7 (4x a positive base's
    cost; most points lie beyond the corners, where the base is 0)."""
    base = 1 - u * u
    inside = base > 0
    return np.where(inside, base, 1.0) ** 0.7 * inside


class _Points:
    """Source points of the mouth's deformation, with the terms of the model that depend on position only,
    each computed on first use. x and y carry the layer axis (length 1 or 2); `window` is the border window."""

    def __init__(self, rig: "MouthRig", x: np.ndarray, y: np.ndarray, window: np.ndarray):
        self.rig, self.x, self.y, self.window = rig, x, y, window

    @cached_property
    def offset(self) -> np.ndarray:
        return self.x - self.rig.center_x

    @cached_property
    def across(self) -> np.ndarray:
        """-1 .. 1 from corner to corner."""
        return self.offset / (0.5 * self.rig.mouth_width)

    @cached_property
    def lip_rest(self) -> np.ndarray:
        return _lip_shape(self.across)

    def lip_profile(self, rounding: float) -> np.ndarray:
        """Opening shape across the mouth: 1 at the centre, 0 at and beyond the corners; rounded lips open
        only in the middle (a round opening rather than a long slit)."""
        if rounding == 0.0:
            return self.lip_rest
        return _lip_shape(self.offset / (0.5 * self.rig.mouth_width * (1 - ROUND_NARROWING * rounding)))

    @cached_property
    def reach(self) -> np.ndarray:
        """How far the corners' sideways motion carries: with the position up to the corners, fading beyond."""
        u = self.across
        beyond = np.maximum(np.abs(u) - 1.0, 0.0)
        return np.clip(u, -1.0, 1.0) * np.exp(beyond * beyond * -2.0)

    @cached_property
    def corner_bump(self) -> np.ndarray:
        rig = self.rig
        return np.exp(-(((self.y - rig.split_y) / (0.45 * rig.mouth_width)) ** 2))

    @cached_property
    def jaw(self) -> np.ndarray:
        rig = self.rig
        return 1 - smoothstep(0.7 * rig.mouth_width, 1.6 * rig.mouth_width, np.abs(self.offset[LOWER]))

    @cached_property
    def cheek_ramp(self) -> np.ndarray:
        return smoothstep(self.rig.corner_y, self.rig.chin_y, self.y[LOWER])

    @cached_property
    def chin_fade(self) -> np.ndarray:
        return 1 - smoothstep(self.rig.chin_y, self.rig.neck_y, self.y[LOWER])

    @cached_property
    def lift_fade(self) -> np.ndarray:
        return 1 - smoothstep(self.rig.split_y, self.rig.chin_y, self.y[LOWER])

    @cached_property
    def rise(self) -> np.ndarray:
        rig = self.rig
        return np.clip((self.y[UPPER] - rig.nose_y) / max(rig.split_y - rig.nose_y, 1.0), 0, 1) ** 1.5

    @cached_property
    def lower_pout(self) -> np.ndarray:
        return self.rig._bump(self.y[LOWER], self.rig.lower_outer_y)

    @cached_property
    def upper_pout(self) -> np.ndarray:
        return self.rig._bump(self.y[UPPER], self.rig.upper_outer_y)


class MouthRig:
    """Geometry of one portrait's mouth and the deformation model driven by (opening, width)."""

    def __init__(self, landmarks: np.ndarray, size: int, portrait: np.ndarray | None = None):
        corners = sorted(landmarks[list(face.MOUTH_CORNERS)].tolist())
        self.corner_left, self.corner_right = float(corners[0][0]), float(corners[1][0])
        self.corner_y = float((corners[0][1] + corners[1][1]) / 2)
        self.mouth_width = self.corner_right - self.corner_left
        self.center_x = (self.corner_left + self.corner_right) / 2
        self.max_drop = OPENING_DROP * self.mouth_width
        face_height = float(landmarks[face.CHIN][1] - landmarks[10][1])
        self.chin_y = float(landmarks[face.CHIN][1])
        self.neck_y = self.chin_y + 0.22 * face_height
        self.nose_y = float(landmarks[2][1])
        # Lip contours between the corners, sampled densely.
        self.columns = np.linspace(self.corner_left, self.corner_right, 64, dtype=np.float32)
        self.upper_inner = _curve(landmarks[face.UPPER_INNER_LIP], self.columns)
        self.lower_inner = _curve(landmarks[face.LOWER_INNER_LIP], self.columns)
        # The layers part where a portrait showing its teeth has the gap between upper and lower teeth (its
        # lower teeth drop with the jaw); a closed mouth parts at the lower inner lip.
        self.teeth_split = teeth_split_fraction(portrait, self.columns, self.upper_inner, self.lower_inner)
        self.split_curve = self.upper_inner + self.teeth_split * (self.lower_inner - self.upper_inner)
        self.split_y = float(self.split_curve.mean())
        self.upper_outer_y = float(landmarks[0][1])  # the upper lip's outer edge at the centre
        self.lower_outer_y = float(landmarks[17][1])
        self.rest_gap = float(max(np.max(self.lower_inner - self.upper_inner), 0.0))  # parted lips at rest
        self.landmarks = landmarks
        self.palette = palette_from_portrait(portrait, landmarks) if portrait is not None else None
        # A portrait that already shows its teeth keeps them (they ride on the upper layer); only a closed
        # mouth gets painted upper teeth.
        self.paint_upper_teeth = float(np.mean(self.lower_inner - self.upper_inner)) < 0.04 * self.mouth_width
        # The region this rig redraws.
        self.x0 = int(max(0, self.center_x - 1.7 * self.mouth_width))
        self.x1 = int(min(size, self.center_x + 1.7 * self.mouth_width))
        self.y0 = int(max(0, self.nose_y - 0.05 * face_height))
        self.y1 = int(min(size, self.neck_y + 0.1 * face_height))
        self.width, self.height = self.x1 - self.x0, self.y1 - self.y0
        self.grid_x, self.grid_y = coarse_grid(self.x0, self.y0, self.width, self.height, GRID_STEP)
        self.pixels = cv2.merge(pixel_grid(self.x0, self.y0, self.width, self.height))  # (x, y) per pixel
        self.rows = np.arange(self.y0, self.y1, dtype=np.float32)
        self.pixel_columns = np.arange(self.x0, self.x1, dtype=np.float32)
        self._grid_points = _Points(self, self.grid_x[None], self.grid_y[None],
                                    self._border_window(self.grid_x, self.grid_y))
        self._split_points = _Points(self, self.columns[None], self.split_curve[None],
                                     self._border_window(self.columns, self.split_curve))
        # Lips, teeth and chin are resampled bicubically (they keep the portrait's detail); the cheeks around
        # them, where the displacement fades out, bilinearly (a third of the cost).
        sharp_rows = (self.upper_outer_y - 0.3 * self.mouth_width, self.chin_y + 0.05 * self.mouth_width)
        sharp_cols = (self.center_x - 1.0 * self.mouth_width, self.center_x + 1.0 * self.mouth_width)
        self.sharp_box = (slice(*np.clip(np.round(sharp_rows).astype(int) - self.y0, 0, self.height)),
                          slice(*np.clip(np.round(sharp_cols).astype(int) - self.x0, 0, self.width)))

    # --- the deformation model: forward displacement of a source point ---------------------------------------
    # Both layers are evaluated in one pass: point arrays carry a leading layer axis, indexed UPPER / LOWER, of
    # length 2, or 1 where the layers share the points (numpy broadcasts). _Points keeps the terms that depend
    # on position only, so the coarse grid's and the split curve's are computed once per rig.

    def _border_window(self, x, y):
        mx, my = BORDER * self.width, BORDER * self.height
        gx, gy = x - self.x0, y - self.y0
        return (smoothstep(0, mx, gx) * smoothstep(0, mx, self.width - gx)
                * smoothstep(0, my, gy) * smoothstep(0, my, self.height - gy))

    def _bump(self, y, centre_y):
        """Weight near one lip's outer edge: where pouting lips grow."""
        return np.exp(-(((y - centre_y) / (0.12 * self.mouth_width)) ** 2))

    def _forward(self, points: "_Points", pose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Displacement of the source points: dx (both layers), dy of the upper and of the lower layer."""
        opening, width, press, labiodental = pose
        mw = self.mouth_width
        lip = points.lip_profile(max(-width, 0.0))
        lip_up, lip_lo = lip[UPPER], lip[LOWER]
        # The parted-lips gap at rest across the mouth (0 for a closed-mouth portrait), closed by press and F/V.
        closing = self.rest_gap > 0 and (press > 0 or labiodental > 0)
        gap = self.rest_gap * points.lip_profile(0.0) if closing else None
        # Corners out for spread lips, in for rounded ones (and a little in as the jaw opens).
        amount = (0.14 * width if width > 0 else ROUND_CORNERS_IN * width) - 0.06 * opening
        dx = amount * 0.5 * mw * points.reach * points.corner_bump
        # Lower layer: lip and chin drop; beside the mouth the cheeks stretch down to the jaw.
        shape = lip_lo + (1 - lip_lo) * points.jaw * points.cheek_ramp
        dy_lo = opening * self.max_drop * shape * points.chin_fade
        if closing or labiodental > 0:  # lifting the lower lip (press, F/V) fades out towards the chin
            gap_lo = gap[LOWER] if closing else 0.0
            lift = ((1 - PRESS_UPPER_SHARE) * PRESS_SQUEEZE * press * gap_lo
                    + labiodental * (0.9 * gap_lo + LABIODENTAL_TUCK * mw * lip_lo))
            dy_lo = dy_lo - lift * points.lift_fade
        # Upper layer: the lip rises (and comes down to meet a pressed lower lip), less towards the nose.
        dy_up = -(opening * UPPER_LIP_RISE * self.max_drop + labiodental * LABIODENTAL_RISE * mw) * lip_up
        if closing:
            dy_up = dy_up + PRESS_UPPER_SHARE * PRESS_SQUEEZE * press * gap[UPPER]
        dy_up = dy_up * points.rise
        if width < 0:  # rounded lips pout: each grows near its outer edge
            dy_lo = dy_lo - width * POUT * mw * lip_lo * points.lower_pout
            dy_up = dy_up + width * POUT * mw * lip_up * points.upper_pout
        window = points.window
        return dx * window, dy_up * window, dy_lo * window

    def _backward_map(self, pose) -> np.ndarray:
        """Per pixel source displacement (height, width, 4: x, y of the upper layer, x, y of the lower), by fixed-point
        iteration of src = dst - D(src) on the coarse grid. The border window is taken at the grid points
        themselves (it is 1 wherever points move far)."""
        points = self._grid_points
        for _ in range(FIXED_POINT_ITERATIONS):
            dx, dy_up, dy_lo = self._forward(points, pose)
            sx, sy = self.grid_x - dx, np.empty((2, *self.grid_y.shape), np.float32)
            np.subtract(self.grid_y, dy_up, out=sy[UPPER])
            np.subtract(self.grid_y, dy_lo, out=sy[LOWER])
            points = _Points(self, sx, sy, self._grid_points.window)
        shift_x, shift_y = sx - self.grid_x, sy - self.grid_y
        coarse = cv2.merge([shift_x[UPPER], shift_y[UPPER], shift_x[LOWER], shift_y[LOWER]])
        return upsample(coarse, self.width, self.height, GRID_STEP)  # one resize: the same as four

    # --- one frame -------------------------------------------------------------------------------------------

    def render(self, source: np.ndarray, opening: float, width: float, press: float = 0.0,
               labiodental: float = 0.0, tongue: float = 0.0, sharp_source: np.ndarray | None = None) -> np.ndarray:
        """The region (y0:y1, x0:x1) of `source` with the mouth in the given state. `sharp_source`, the same
        picture as RGB where `source` is RGBA, serves the bicubic box: cv2.remap's bicubic path is faster on three
        channels, its bilinear path on four (that box's alpha is then the bilinear one, 255 all the same)."""
        if opening < 1e-3 and abs(width) < 1e-3 and press < 1e-3 and labiodental < 1e-3:
            return source[self.y0 : self.y1, self.x0 : self.x1]
        pose = (opening, width, press, labiodental)
        shift = self._backward_map(pose)
        columns = self.pixel_columns
        # Output position of the split line as seen from each layer: the top and bottom of the opening.
        dx, dy_up, dy_lo = self._forward(self._split_points, pose)
        tx, ty = (self.columns + dx)[UPPER], self.split_curve + dy_up
        bx, by = (self.columns + dx)[LOWER], self.split_curve + dy_lo
        split_out = np.interp(columns, tx, ty, left=self.corner_y, right=self.corner_y)
        # Where the lower lip rose above the split (press, F/V), it covers the upper layer.
        split_out = np.minimum(split_out, np.interp(columns, bx, by, left=self.corner_y, right=self.corner_y))
        use_lower = self.rows[:, None] > split_out[None, :]
        # Each layer's (x, y) shift viewed as one 8-byte item, so that one np.where picks both (and fast).
        layers = shift.view(np.int64)
        picked = np.where(use_lower, layers[..., 1], layers[..., 0])
        source_xy = self.pixels + picked.view(np.float32).reshape(self.height, self.width, 2)
        warped = cv2.remap(source, source_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        rows, cols = self.sharp_box
        sharp_source = source if sharp_source is None else sharp_source
        warped[rows, cols, : sharp_source.shape[2]] = cv2.remap(sharp_source, source_xy[rows, cols], None,
                                                                cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        top = np.interp(columns, tx, ty, left=np.nan, right=np.nan)
        bottom = np.interp(columns, bx, by, left=np.nan, right=np.nan)
        if self.palette is None:  # colours measured on the first portrait rendered, when not given up front
            self.palette = palette_from_portrait(source[..., :3], self.landmarks)
        paint_interior(warped, self.rows, columns, top, bottom, self.center_x, self.mouth_width,
                       self.palette, InteriorPose(upper_teeth=float(self.paint_upper_teeth),
                                                  lower_teeth=float(self.teeth_split > 0.99),
                                                  tongue_tip=tongue, labiodental=labiodental))
        return warped
