"""The broadcast-format fields of a request at the front doors (REST JSON body, upload form, MCP tool): their
pydantic models (so the OpenAPI spec shows them) and the one conversion into an engines.delivery.Delivery, with a
canvas background image checked by the same worker.security rules as the portrait."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.delivery import Delivery
from schemas.errors import InvalidParameter
from worker.security import IMAGE, SecurityPolicy, check_reference

from .request_types import Number, OptionalNumber

Output = Literal["mp4", "webm", "mov", "hls"]
OUTPUT_HELP = ("mp4 (H.264 + AAC), webm (VP9 with alpha), mov (ProRes 4444 with alpha) or hls (fMP4 segments + "
               "playlist stored while rendering; /status lists each segment)")


class CanvasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: Literal["1920x1080", "1280x720", "1080x1920"] = "1920x1080"
    x: Number = Field(0.5, ge=0, le=1, description="the avatar's centre, a fraction of the canvas width")
    y: Number = Field(0.5, ge=0, le=1, description="the avatar's centre, a fraction of the canvas height")
    scale: OptionalNumber = Field(None, ge=0.05, le=2, description="avatar height / canvas height; default: as large as fits")
    background: str | None = Field(None, pattern=r"^#?[0-9a-fA-F]{6}$", description="#RRGGBB (default black)")
    backgroundUri: str | None = Field(None, min_length=1, max_length=2048,
                                      description="a background image, checked like avatarPath")


class LoudnessBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: Literal["ebu-r128", "atsc-a85", "web"] | Number = Field(
        description="ebu-r128 (-23 LUFS), atsc-a85 (-24 LKFS), web (-16) or a number of LUFS from -40 to -5")
    truePeak: OptionalNumber = Field(None, ge=-9, le=0, description="true-peak ceiling, dBTP (default: the preset's)")


class HlsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segmentSeconds: Number = Field(2.0, ge=1, le=2)
    mp4: bool = Field(False, description="also store one MP4 of the whole render")


def delivery_from_wire(wire: dict, policy: SecurityPolicy) -> Delivery:
    """The Delivery of a request's output / canvas / loudness / hls (wire form, None values dropped); a background
    image is checked now (allowed roots, allow-listed https, size and content), like the portrait. Refusals are
    RenderErrors (InvalidParameter, path_not_allowed ...)."""
    wire = {k: v for k, v in wire.items() if v is not None}
    if "hls" in wire and wire.get("output") != "hls":  # the worker would ignore them
        raise InvalidParameter(f"hls settings apply only to output hls, not {wire.get('output', 'mp4')}: "
                               "add \"output\": \"hls\" or leave hls out.")
    if isinstance(wire.get("canvas"), dict):
        wire["canvas"] = {k: v for k, v in wire["canvas"].items() if v is not None}
    if isinstance(wire.get("loudness"), dict):
        wire["loudness"] = {k: v for k, v in wire["loudness"].items() if v is not None}
    delivery = Delivery.from_wire(wire)
    canvas = delivery.canvas
    if canvas is not None and canvas.background_uri:
        checked = check_reference(canvas.background_uri, IMAGE, policy)
        delivery = dataclasses.replace(delivery, canvas=dataclasses.replace(canvas, background_uri=checked))
    return delivery
