"""Profiles: named parameter sets for the default policy, selectable by name or ``$AIOGOVERNOR_PROFILE``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from aiogovernor._clone import copier
from aiogovernor._env import getenv
from aiogovernor._samples import WindowConfig

from ._base import LimitPolicy
from ._latency_aimd import LatencyAIMD

__all__ = ["PROFILES", "Profile", "default_policy", "profile"]

PROFILE_ENV = "AIOGOVERNOR_PROFILE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A named parameter set for `LatencyAIMD`, plus the window and resource targets that suit it.

    Attributes:
        name: The profile's name.
        tolerance: Latency over the baseline that is not yet queueing.
        backoff_ratio: Multiplier on overload.
        max_decrease: Deepest cut per window.
        probe_interval_windows: Clean windows before probing past a ceiling
            (the cooldown), and before growth steps start doubling.
        max_step_ratio: Largest growth step, as a fraction of the limit.
        min_limit: The floor.
        max_limit: The ceiling.
        window: Window rules to pass as ``Governor(window=...)``.
        cpu_target_percent: Host CPU above which the limit may not grow
            (`ResourceCeiling`), None for no resource signal.
        cpu_high_percent: Host CPU above which it shrinks.
        memory_target_percent: Host memory above which it may not grow.
        memory_high_percent: Host memory above which it shrinks.
    """

    name: str
    tolerance: float
    backoff_ratio: float
    max_decrease: float
    probe_interval_windows: int
    max_step_ratio: float
    min_limit: int = 1
    max_limit: int = 1000
    window: WindowConfig = field(default_factory=WindowConfig)
    cpu_target_percent: float | None = None
    cpu_high_percent: float | None = None
    memory_target_percent: float | None = None
    memory_high_percent: float | None = None

    def policy(self) -> LimitPolicy:
        """A fresh policy with these parameters; wrapped in a `ResourceCeiling` if targets are set."""
        made = _copiers.get(self.name)
        if made is not None and made[0] is self:
            return made[1]()
        inner = LatencyAIMD(
            min_limit=self.min_limit,
            max_limit=self.max_limit,
            tolerance=self.tolerance,
            backoff_ratio=self.backoff_ratio,
            max_decrease=self.max_decrease,
            probe_interval_windows=self.probe_interval_windows,
            max_step_ratio=self.max_step_ratio,
        )
        if self.cpu_target_percent is None and self.memory_target_percent is None:
            if PROFILES.get(self.name) is self:
                # A built-in profile's settings were validated once: later policies are copies
                # of this one as it was made, at a fifth of the constructor's cost.
                _copiers[self.name] = (self, copier(inner))
            return inner
        from ._resources import ResourceCeiling

        return ResourceCeiling(
            inner,
            cpu_target_percent=self.cpu_target_percent,
            cpu_high_percent=self.cpu_high_percent,
            memory_target_percent=self.memory_target_percent,
            memory_high_percent=self.memory_high_percent,
        )


# Built-in profile name -> (the profile, a copier of its policy as first made).
_copiers: dict[str, tuple[Profile, Callable[[], LatencyAIMD]]] = {}

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="conservative",
            tolerance=0.05,
            backoff_ratio=0.7,
            max_decrease=0.5,
            probe_interval_windows=10,
            max_step_ratio=0.25,
            max_limit=200,
            window=WindowConfig(min_samples=20, latency_multiple=4.0),
        ),
        Profile(
            name="balanced",
            tolerance=0.1,
            backoff_ratio=0.9,
            max_decrease=0.5,
            probe_interval_windows=5,
            max_step_ratio=0.5,
        ),
        Profile(
            name="aggressive",
            tolerance=0.25,
            backoff_ratio=0.95,
            max_decrease=0.3,
            probe_interval_windows=2,
            max_step_ratio=1.0,
            window=WindowConfig(min_samples=5, latency_multiple=1.0),
        ),
    )
}
"""The built-in profiles by name. Resource targets are off in all three (they need the
``resources`` extra); set them with ``dataclasses.replace(profile("balanced"), cpu_target_percent=80)``."""


def profile(name: str | None = None) -> Profile:
    """The profile called ``name``; by default ``$AIOGOVERNOR_PROFILE``, else ``balanced``.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
    """
    if name is None:
        name = getenv(PROFILE_ENV) or "balanced"
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(PROFILES))
        source = f" (from ${PROFILE_ENV})" if name == os.environ.get(PROFILE_ENV) else ""
        raise ValueError(f"unknown profile {name!r}{source}; valid profiles: {valid}") from None


def default_policy() -> LimitPolicy:
    """A new instance of the policy a governor uses when given none.

    `LatencyAIMD` with the parameters of the profile named by
    ``$AIOGOVERNOR_PROFILE`` (``balanced`` when unset).
    """
    return profile().policy()
