"""The motion presets by name. Apart from the coder (whose surround tables load MediaPipe), so
that the command line can offer them without loading it."""

from __future__ import annotations

# k factor (coefficients against the medium preset's), step multiplier; coarsest first.
PRESET_STEPS = {"lowest": (0.25, 2.5), "low": (0.5, 1.6), "medium": (1.0, 1.0),
                "high": (2.0, 0.6)}
PRESETS = tuple(PRESET_STEPS)
DEFAULT_PRESET = "medium"
