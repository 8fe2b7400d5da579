"""What the platform knew at the end of each day: versions of the day's inputs.

See :mod:`tessera.history.versions` and docs/ARCHITECTURE.md ("As-of days and backfills").
"""

from tessera.history.versions import (DAY_INPUTS, NotRecorded, day_engine, recorded_days,
                                      record_day)

__all__ = ["DAY_INPUTS", "NotRecorded", "day_engine", "record_day", "recorded_days"]
