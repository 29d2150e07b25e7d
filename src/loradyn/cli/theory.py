"""CLI commands of the theory engine: ``tau``, ``singularities``, ``hermite``."""

from __future__ import annotations
