"""The top-level package: lazy exports, light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import loradyn


@pytest.mark.parametrize("name", [n for n in loradyn.__all__ if n != "__version__"])
def test_every_export_resolves(name):
    obj = getattr(loradyn, name)
    assert callable(obj), name


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loradyn.nope  # noqa: B018


def test_import_is_light():
    heavy = "('torch', 'xarray', 'scipy', 'dask')"
    code = f"import sys, loradyn; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_top_level_tau_matches_module():
    from loradyn.linearization import tau

    assert loradyn.tau("linear", 0.5).tau == tau("linear", 0.5).tau
