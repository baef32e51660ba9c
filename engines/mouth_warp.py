"""Opens, spreads and rounds the mouth of a still portrait by warping lips, cheeks and jaw, and paints the
mouth interior (dark cavity, upper teeth, a hint of lower teeth and tongue) into the opening.

The lower face is warped as two layers split along the lower inner lip: the upper layer (upper lip and
whatever the portrait shows inside the mouth, such as teeth) rises a little; the lower layer (lower lip,
chin) drops. One smooth field cannot tear open at the lips, two can; the gap between them is the opening.
Below the opening the lower face drops as a block; beside it the cheeks stretch gradually down to the jaw,
so there is no tear outside the mouth. Fields are evaluated on a coarse grid and upsampled (they are
smooth), so a frame costs about a millisecond at 512 px.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import face
from .fields import coarse_grid, pixel_grid, smoothstep, upsample

GRID_STEP = 4  # pixels between coarse field samples
FIXED_POINT_ITERATIONS = 3  # inverting the forward displacement: src = dst - D(src)
OPENING_DROP = 0.36  # lower-lip drop at full opening, as a fraction of mouth width
UPPER_LIP_RISE = 0.12  # upper-lip rise, as a fraction of the drop
BORDER = 0.12  # fraction of the region over which displacement fades to zero at its edges

CAVITY_RGB = np.array([46, 16, 19], np.float32)
TEETH_RGB = np.array([226, 221, 208], np.float32)
TONGUE_RGB = np.array([126, 58, 62], np.float32)


def _curve(points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(columns, points[order, 0], points[order, 1]).astype(np.float32)


class MouthRig:
    """Geometry of one portrait's mouth and the deformation model driven by (opening, width)."""

    def __init__(self, landmarks: np.ndarray, size: int):
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
        self.split_y = float(self.lower_inner.mean())
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
        self.pixel_x, self.pixel_y = pixel_grid(self.x0, self.y0, self.width, self.height)

    # --- the deformation model: forward displacement of a source point ---------------------------------------

    def _lip_profile(self, x):
        """Opening shape across the mouth: 1 at the centre, 0 at and beyond the corners."""
        u = (x - self.center_x) / (0.5 * self.mouth_width)
        return np.clip(1 - u * u, 0, 1) ** 0.7

    def _border_window(self, x, y):
        mx, my = BORDER * self.width, BORDER * self.height
        gx, gy = x - self.x0, y - self.y0
        return (smoothstep(0, mx, gx) * smoothstep(0, mx, self.width - gx)
                * smoothstep(0, my, gy) * smoothstep(0, my, self.height - gy))

    def _dx(self, x, y, opening, width):
        """Corners out for spread lips, in for rounded ones (and a little in as the jaw opens)."""
        u = (x - self.center_x) / (0.5 * self.mouth_width)
        reach = np.sign(u) * np.minimum(np.abs(u), 1.0) * np.exp(-(np.maximum(np.abs(u) - 1.0, 0.0) ** 2) / 0.5)
        bump = np.exp(-(((y - self.split_y) / (0.45 * self.mouth_width)) ** 2))
        amount = (0.14 * width if width > 0 else 0.22 * width) - 0.06 * opening
        return amount * 0.5 * self.mouth_width * reach * bump

    def _dy_lower(self, x, y, opening):
        lip = self._lip_profile(x)
        jaw = 1 - smoothstep(0.7 * self.mouth_width, 1.6 * self.mouth_width, np.abs(x - self.center_x))
        cheek_ramp = smoothstep(self.corner_y, self.chin_y, y)
        shape = lip + (1 - lip) * jaw * cheek_ramp
        return opening * self.max_drop * shape * (1 - smoothstep(self.chin_y, self.neck_y, y))

    def _dy_upper(self, x, y, opening):
        rise = np.clip((y - self.nose_y) / max(self.split_y - self.nose_y, 1.0), 0, 1) ** 1.5
        return -opening * UPPER_LIP_RISE * self.max_drop * self._lip_profile(x) * rise

    def _forward(self, x, y, opening, width, lower):
        dy = self._dy_lower(x, y, opening) if lower else self._dy_upper(x, y, opening)
        window = self._border_window(x, y)
        return self._dx(x, y, opening, width) * window, dy * window

    def _backward_map(self, opening, width, lower):
        """Per pixel source coordinates, by fixed-point iteration of src = dst - D(src) on the coarse grid."""
        sx, sy = self.grid_x, self.grid_y
        for _ in range(FIXED_POINT_ITERATIONS):
            dx, dy = self._forward(sx, sy, opening, width, lower)
            sx, sy = self.grid_x - dx, self.grid_y - dy
        map_x = self.pixel_x + upsample(sx - self.grid_x, self.width, self.height, GRID_STEP)
        map_y = self.pixel_y + upsample(sy - self.grid_y, self.width, self.height, GRID_STEP)
        return map_x, map_y

    def _moved_curve(self, curve_y, opening, width, lower):
        dx, dy = self._forward(self.columns, curve_y, opening, width, lower)
        return self.columns + dx, curve_y + dy

    # --- one frame -------------------------------------------------------------------------------------------

    def render(self, source: np.ndarray, opening: float, width: float) -> np.ndarray:
        """The region (y0:y1, x0:x1) of `source` with the mouth in the given state."""
        if opening < 1e-3 and abs(width) < 1e-3:
            return source[self.y0 : self.y1, self.x0 : self.x1]
        upper_x, upper_y = self._backward_map(opening, width, lower=False)
        lower_x, lower_y = self._backward_map(opening, width, lower=True)
        columns = self.pixel_x[0]
        # Output position of the split line as seen from each layer: the top and bottom of the opening.
        tx, ty = self._moved_curve(self.lower_inner, opening, width, lower=False)
        bx, by = self._moved_curve(self.lower_inner, opening, width, lower=True)
        split_out = np.interp(columns, tx, ty, left=self.corner_y, right=self.corner_y)
        use_lower = self.pixel_y > split_out[None, :]
        map_x = np.where(use_lower, lower_x, upper_x)
        map_y = np.where(use_lower, lower_y, upper_y)
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        top = np.interp(columns, tx, ty, left=np.nan, right=np.nan)
        bottom = np.interp(columns, bx, by, left=np.nan, right=np.nan)
        return self._paint_interior(warped, columns, top, bottom)

    def _paint_interior(self, warped, columns, top, bottom):
        valid = np.flatnonzero(np.isfinite(top) & np.isfinite(bottom) & (bottom > top))
        if valid.size == 0:
            return warped
        c0, c1 = valid[0], valid[-1] + 1
        top, bottom = top[c0:c1], bottom[c0:c1]
        row_lo = int(max(0, np.floor(np.nanmin(top)) - self.y0 - 1))
        row_hi = int(min(self.height, np.ceil(np.nanmax(bottom)) - self.y0 + 2))
        if row_hi <= row_lo:
            return warped
        gap = np.maximum(bottom - top, 0.0)
        y = self.pixel_y[row_lo:row_hi, c0:c1]
        mw = self.mouth_width
        # Fraction of each pixel inside the opening (one-pixel soft edge).
        coverage = np.clip(np.minimum(y - top + 0.5, bottom - y + 0.5), 0, 1) * np.clip(gap / 1.5, 0, 1)
        across = (columns[c0:c1] - self.center_x) / (0.5 * mw)
        centre = np.clip(1 - across**2, 0, 1)
        from_top, from_bottom = y - top, bottom - y
        depth = np.clip(from_top / np.maximum(gap, 1e-3), 0, 1)
        interior = CAVITY_RGB * (0.75 + 0.5 * np.abs(depth - 0.5)[..., None]) * (0.7 + 0.3 * (1 - centre))[None, :, None]
        layers = [
            # upper teeth hang from the top of the opening
            (TEETH_RGB * (0.8 + 0.2 * centre)[None, :, None],
             np.clip(np.minimum(0.13 * mw, 0.5 * gap) * np.sqrt(centre) - from_top + 0.5, 0, 1)
             * np.clip(gap / (0.05 * mw), 0, 1) * float(self.paint_upper_teeth)),
            # tongue low in a wide-open mouth
            (TONGUE_RGB, np.clip((depth - 0.62) * 4, 0, 1) * np.clip(1 - across**2 * 2.2, 0, 1)
             * np.clip((gap - 0.2 * mw) / (0.1 * mw), 0, 1)),
            # a hint of lower teeth just above the lower lip
            (TEETH_RGB * 0.7, np.clip(np.minimum(0.05 * mw, 0.2 * gap) * np.clip(1 - 1.4 * across**2, 0, 1)
                                      - from_bottom + 0.5, 0, 1)
             * np.clip((gap - 0.16 * mw) / (0.1 * mw), 0, 1)),
        ]
        for colour, alpha in layers:
            interior = interior * (1 - alpha[..., None]) + colour * alpha[..., None]
        region = warped[row_lo:row_hi, c0:c1].astype(np.float32)
        alpha = coverage[..., None]
        warped[row_lo:row_hi, c0:c1] = (region * (1 - alpha) + interior * alpha + 0.5).astype(np.uint8)
        return warped
