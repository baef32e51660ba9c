"""Which face of a photo a request animates: the largest (default), the N-th, or the one inside a box.

Spelled on the command line as `largest`, `index:N` or `box:X,Y,W,H` (source pixels), and on the wire
(render.requested.v1 `face`, REST, MCP) as `"largest"`, `{"index": N}` or `{"box": [X, Y, W, H]}`.
Faces are indexed left to right by the centre of their box, from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import InvalidParameter, NoFaceFound

HOW = ("largest", "index", "box")


@dataclass(frozen=True)
class FaceChoice:
    how: str = "largest"
    index: int | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, width, height in source pixels

    def __post_init__(self) -> None:
        if self.how not in HOW:
            raise InvalidParameter(f"face must be one of {', '.join(HOW)}, got {self.how!r}.")
        if self.how == "index" and (self.index is None or self.index < 0):
            raise InvalidParameter(f"face index must be a whole number from 0, got {self.index!r}.")
        if self.how == "box" and (self.box is None or len(self.box) != 4 or self.box[2] <= 0 or self.box[3] <= 0):
            raise InvalidParameter(f"face box must be X,Y,W,H with a positive width and height, got {self.box!r}.")

    @classmethod
    def parse(cls, text: str) -> "FaceChoice":
        """`largest`, `index:N` or `box:X,Y,W,H`."""
        how, _, rest = text.strip().partition(":")
        try:
            if how == "index" and rest:
                return cls("index", index=int(rest))
            if how == "box" and rest:
                x, y, w, h = (float(v) for v in rest.split(","))
                return cls("box", box=(x, y, w, h))
        except ValueError:
            pass
        if how == "largest" and not rest:
            return cls()
        raise InvalidParameter(f"face must be largest, index:N or box:X,Y,W,H, got {text!r}.")

    @classmethod
    def from_wire(cls, value) -> "FaceChoice":
        """The JSON form: "largest", {"index": N} or {"box": [X, Y, W, H]} (None: largest)."""
        if value is None or value == "largest":
            return cls()
        if isinstance(value, dict) and set(value) == {"index"} and isinstance(value["index"], int):
            return cls("index", index=value["index"])
        if isinstance(value, dict) and set(value) == {"box"} and isinstance(value["box"], list) and len(value["box"]) == 4:
            return cls("box", box=tuple(float(v) for v in value["box"]))
        raise InvalidParameter(f'face must be "largest", {{"index": N}} or {{"box": [X, Y, W, H]}}, got {value!r}.')

    def to_wire(self):
        if self.how == "index":
            return {"index": self.index}
        if self.how == "box":
            return {"box": list(self.box)}
        return "largest"

    def pick(self, boxes: list[tuple[float, float, float, float]]) -> int:
        """Index of the chosen face among ``boxes`` (x, y, w, h, in source pixels, left to right): the largest,
        the N-th, or the one with most of its box inside the given box. Refuses with one sentence when the
        index is past the last face or no face overlaps the box."""
        count = len(boxes)
        if self.how == "index":
            if self.index >= count:
                raise InvalidParameter(
                    f"face index {self.index} was asked for, but the portrait has {count} face(s): "
                    f"use an index from 0 to {count - 1}, counted left to right."
                )
            return self.index
        if self.how == "box":
            inside = [_inside(face, self.box) for face in boxes]
            best = max(range(count), key=lambda i: inside[i])
            if inside[best] <= 0:
                found = ", ".join(f"[{x:.0f}, {y:.0f}, {w:.0f}, {h:.0f}]" for x, y, w, h in boxes)
                x, y, w, h = self.box
                raise NoFaceFound(
                    f"No face overlaps the box [{x:g}, {y:g}, {w:g}, {h:g}]; the portrait's {count} face(s) "
                    f"are at {found} (x, y, width, height)."
                )
            return best
        return max(range(count), key=lambda i: boxes[i][2] * boxes[i][3])


def _inside(face, box) -> float:
    """The share of ``face``'s area inside ``box``."""
    ix = max(0.0, min(face[0] + face[2], box[0] + box[2]) - max(face[0], box[0]))
    iy = max(0.0, min(face[1] + face[3], box[1] + box[3]) - max(face[1], box[1]))
    return ix * iy / max(1e-6, face[2] * face[3])
