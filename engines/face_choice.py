"""Which face of a photo a request animates: the largest (default), the N-th, or the one inside a box.

Spelled on the command line as `largest`, `index:N` or `box:X,Y,W,H` (source pixels), and on the wire
(render.requested.v1 `face`, REST, MCP) as `"largest"`, `{"index": N}` or `{"box": [X, Y, W, H]}`.
Faces are indexed left to right by the centre of their box, from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import InvalidParameter

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
