"""Adapters: convert other tools' training-dynamics logs into soicurate's native run format.

- :func:`import_cartography`: Dataset Cartography's ``training_dynamics/dynamics_epoch_N.jsonl``.
- :func:`import_table`: any long table (CSV, JSON Lines, Parquet) described by a :class:`TableMapping`.

Both write a native run directory atomically; :func:`soicurate.profiling.sources.open_run`
calls them when it is pointed at such logs. See docs/adapters.md.
"""

from soicurate.recording.adapters.cartography import (
    example_ids_from_guids,
    find_cartography_files,
    import_cartography,
    stable_example_id,
)
from soicurate.recording.adapters.table import PROBABILITY_SOURCES, TableMapping, import_table

__all__ = [
    "PROBABILITY_SOURCES",
    "TableMapping",
    "example_ids_from_guids",
    "find_cartography_files",
    "import_cartography",
    "import_table",
    "stable_example_id",
]
