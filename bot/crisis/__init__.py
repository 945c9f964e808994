"""Crisis detection: every incoming text is checked here before anything else."""

from bot.crisis.detector import (
    DEFAULT_PHRASES,
    Category,
    CrisisDetector,
    CrisisMatch,
    default_detector,
)

__all__ = ["DEFAULT_PHRASES", "Category", "CrisisDetector", "CrisisMatch", "default_detector"]
