"""soicurate: record training dynamics, profile them into Subsets of Interest, curate, retrain.

The top-level import is deliberately light (no numba, polars, torch); the public functions are
loaded on first use so that `soicurate --help` and `import soicurate` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "profile": ("soicurate.profiling.pipeline", "profile"),
    "write_profile": ("soicurate.profiling.pipeline", "write_profile"),
    "read_profile": ("soicurate.profiling.pipeline", "read_profile"),
    "RunReader": ("soicurate.profiling.reader", "RunReader"),
    "read_dynamics": ("soicurate.profiling.reader", "read_dynamics"),
    "DynamicsWriter": ("soicurate.recording.writer", "DynamicsWriter"),
    "DynamicsRecorder": ("soicurate.recording.recorder", "DynamicsRecorder"),
    "DynamicsTrainer": ("soicurate.recording.hf", "DynamicsTrainer"),
    "DynamicsTrainerMixin": ("soicurate.recording.hf", "DynamicsTrainerMixin"),
    "DynamicsCallback": ("soicurate.recording.hf", "DynamicsCallback"),
    "Manifest": ("soicurate.recording.manifest", "Manifest"),
    "curate": ("soicurate.curation", "curate"),
    "CATEGORIES": ("soicurate.profiling.soi", "CATEGORIES"),
    "REGIONS": ("soicurate.profiling.regions", "REGIONS"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'soicurate' has no attribute {name!r}")
