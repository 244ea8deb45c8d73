"""The global holdout: a fixed share of all customers that no experiment treats.

Customers whose salted hash falls below ``share`` are in it, whatever experiment selects them;
an experiment that selects one records them in its ``holdout`` arm and sends them nothing, so the
whole programme's effect is the difference between treated arms and the holdout. The setting is a
small YAML file (``RETAIN_HOLDOUT_FILE``, default ``holdout.yaml`` in the working directory if it
exists)::

    share: 0.05            # 5 % of all customers
    salt: holdout-2026     # changing it picks other customers; keep it for the programme's life

Without the file there is no holdout (share 0).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

DEFAULT_FILE = "holdout.yaml"


class HoldoutSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(default=0.0, ge=0, lt=0.5, description="share of all customers")
    salt: str = Field(default="retain-holdout", min_length=1)


class HoldoutError(ValueError):
    """The holdout file is unreadable or invalid; the message names the file and the fix."""


def load_holdout(path: str | Path | None = None) -> HoldoutSettings:
    """The holdout setting from ``path`` (default: ``RETAIN_HOLDOUT_FILE`` or ``holdout.yaml``);
    no holdout when the default file does not exist."""
    explicit = path or os.environ.get("RETAIN_HOLDOUT_FILE")
    file = Path(explicit or DEFAULT_FILE)
    if not file.exists():
        if explicit:
            raise HoldoutError(
                f"{file}: holdout file not found; create it or unset RETAIN_HOLDOUT_FILE"
            )
        return HoldoutSettings()
    try:
        data = YAML(typ="safe").load(file.read_text(encoding="utf-8"))
        return HoldoutSettings.model_validate(data or {})
    except (YAMLError, OSError, UnicodeDecodeError) as error:
        raise HoldoutError(f"{file}: cannot read the holdout setting: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise HoldoutError(
            f"{file}: {where}: {first['msg']}; write e.g. 'share: 0.05' and 'salt: holdout-2026'"
        ) from None
