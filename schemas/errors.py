"""Errors for bad input that name the file, line and field, so a user can fix the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class InputError(ValueError):
    """Bad input data: says which file, which line (if any) and which field is wrong."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {message}".replace(": ", ": ", 1))


def from_validation_error(
    path: str | Path, error: ValidationError, *, line: int | None = None
) -> InputError:
    """Turn pydantic's error into an InputError naming the first offending field."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or None
    more = len(error.errors()) - 1
    message = first.get("msg", "invalid value") + (f" (and {more} more)" if more else "")
    return InputError(path, message, line=line, field=field)


def load_json_model(path: str | Path, model: type[ModelT], what: str) -> ModelT:
    """Read a JSON file into a pydantic model; unreadable JSON or a bad field names the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read {what} JSON: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(path, exc) from exc
