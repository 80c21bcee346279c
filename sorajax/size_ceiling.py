"""The ceiling for absurd sizes, counts and step counts: a typo (width 100000) is refused in one line
before any estimate or allocation. A leaf, so that configs (data, training) can check their sizes too."""

from __future__ import annotations

import dataclasses
import os

CEILING_ENV = "SORAJAX_CEILING"


@dataclasses.dataclass(frozen=True)
class SizeCeiling:
    """Requests past these are refused before any estimate work: typos (width 100000), not real sizes.

    Configurable for every command and Python call through one environment variable, read by
    :meth:`current`: ``SORAJAX_CEILING="max_side=16384,max_frames=4097"`` (any of the fields below).
    """

    max_side: int = 8192  # pixels of a sampled frame or a training clip
    max_frames: int = 2049  # frames of one sampled window or one training clip
    max_long_frames: int = 100_000  # total frames of a --long video (held whole in host memory)
    max_count: int = 1024  # videos of one sampling call, rows of a DiT step, clips of a VAE batch
    max_tokens: int = 1 << 20  # tokens of a packed row (data.seq_len)
    max_steps: int = 100_000_000  # training steps

    @classmethod
    def current(cls) -> "SizeCeiling":
        """The ceiling with ``$SORAJAX_CEILING``'s overrides (see the class docstring)."""
        text = os.environ.get(CEILING_ENV, "").strip()
        values: dict[str, int] = {}
        fields = [field.name for field in dataclasses.fields(cls)]
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name.strip() not in fields or not value.strip().isdigit():
                raise ValueError(f"{CEILING_ENV}={text!r}: {item!r} is not name=positive integer with a name of "
                                 f"{fields}; e.g. {CEILING_ENV}=max_side=16384,max_frames=4097")
            values[name.strip()] = int(value)
        return cls(**values)

    def limit(self, what: str, value: int, field: str, fix: str) -> None:
        """Refuse ``value`` (named ``what``) past this ceiling's ``field``; ``fix`` says what to do instead."""
        ceiling = getattr(self, field)
        if value > ceiling:
            raise ValueError(f"{what} {value} is past the ceiling of {ceiling}: {fix} (or raise it: "
                             f"{CEILING_ENV}={field}=N)")

    def check(self, frames: int, height: int, width: int) -> None:
        """A sampled window's or a training clip's size."""
        for name, value in (("width", width), ("height", height)):
            self.limit(name, value, "max_side", f"ask for at most {self.max_side}")
        self.limit("frames", frames, "max_frames", f"ask for at most {self.max_frames} (--long makes longer videos)")
