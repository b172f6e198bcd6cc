"""Former plain-table reader, kept as names only: the one implementation is :mod:`mulens_sbi.readers`.

``read_table`` is :func:`mulens_sbi.readers.read_dataset` (any supported format, auto-detected) and
``read_event`` is :func:`mulens_sbi.readers.read_event`.
"""

from mulens_sbi.readers import TIME_FORMATS, DataFormatError, read_event
from mulens_sbi.readers import read_dataset as read_table

__all__ = ["DataFormatError", "TIME_FORMATS", "read_event", "read_table"]
