"""Field types the front doors' request models share: the REST JSON body (gateway/rest.py, delivery_request.py)
and the MCP tool's arguments (gateway/mcp.py).

Numbers refuse JSON true and false: Python's bool is a subclass of int, so pydantic's lax int and float fields
would take `"fps": true` as 1 (a 1 fps video). Every numeric request field is an `Int` or a `Number`, or is
annotated with `NotBool`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError


def _not_bool(value):
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "Input should be a number, not true or false")
    return value


NotBool = BeforeValidator(_not_bool)
Int = Annotated[int, NotBool]
Number = Annotated[float, NotBool]
# NotBool outside the None: a field's ge/le then stay minimum/maximum in the JSON schema (inside, pydantic would
# write them as "ge"/"le", which no schema reader knows).
OptionalInt = Annotated[int | None, NotBool]
OptionalNumber = Annotated[float | None, NotBool]


class FaceIndex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: Int = Field(ge=0, le=1000, description="faces left to right, from 0")


class FaceBox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: list[Number] = Field(min_length=4, max_length=4, description="x, y, width, height in the photo's pixels")
