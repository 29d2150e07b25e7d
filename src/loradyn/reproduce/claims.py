"""The claims table: statements of the paper, each evaluated from data made in the run.

Every figure module returns its own :class:`~loradyn.reproduce.registry.Claim` rows
(computed from the numbers it just produced). This module gathers them, adds a
``not-tested`` row for statements whose figure is pending, and writes ``claims.csv`` with
the header ``id,section,statement,measured,expected,verdict``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_write
from .paper import statement as quote
from .registry import VERDICTS, Claim

if TYPE_CHECKING:
    from .runner import ReproduceResult

HEADER = ("id", "section", "statement", "measured", "expected", "verdict")

# statements whose evaluation lives in another helper's figure module; listed as
# not-tested while that module is pending
PLACEHOLDERS = {
    "fig13": [
        ("K1", "App. K", "Two-layer LoRA, linear activation: the search-phase escape depends on "
         "the mismatch vector (1 - mu_k) and not on the rank r", "escape rate independent of r"),
    ],
    "fig14": [
        ("K2", "App. K", "Two-layer LoRA, He2/sqrt(2): the pre-trained weights set the search "
         "phase while the rank sets the final loss", "final loss decreases with r"),
    ],
    "table1": [
        ("J1", "Sec. 3.3 / App. J", "ViT LoRA: later source checkpoints can adapt worse "
         "downstream despite higher source accuracy",
         "downstream acc. not monotone in source acc."),
    ],
}


def collect(result: ReproduceResult) -> list[Claim]:
    """All claims of the finished items, in figure order, plus pending placeholders."""
    rows: list[Claim] = []
    seen: set[str] = set()
    for item in result.items:
        if item.status == "done" and item.output is not None:
            for c in item.output.claims:
                cid = c.id if c.id not in seen else f"{c.id}-{item.id}"
                seen.add(cid)
                rows.append(c if cid == c.id else Claim(cid, c.section, c.statement, c.measured,
                                                        c.expected, c.verdict))
        elif item.id in PLACEHOLDERS:
            for cid, section, statement, expected in PLACEHOLDERS[item.id]:
                if cid in seen:
                    continue
                seen.add(cid)
                why = item.reason or item.status
                rows.append(Claim(cid, section, quote(cid, statement),
                                  f"{item.id} {item.status}: {why}", expected, "not-tested"))
    return rows


def write_csv(claims: list[Claim], path: str | Path) -> Path:
    """Write the claims to ``path`` (atomically) with the header ``id,section,...,verdict``."""
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for c in claims:
            if c.verdict not in VERDICTS:
                raise ValueError(f"claim {c.id}: bad verdict {c.verdict!r}")
            w.writerow([c.id, c.section, c.statement, c.measured, c.expected, c.verdict])
    return path


def read_csv(path: str | Path) -> list[Claim]:
    """Read a ``claims.csv`` back into :class:`Claim` rows (checks the header)."""
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = tuple(next(r))
        if header != HEADER:
            raise ValueError(f"{path}: header {header} is not {HEADER}")
        return [Claim(*row) for row in r]


def summary(claims: list[Claim]) -> dict[str, int]:
    """Counts per verdict (every verdict of :data:`VERDICTS` is a key)."""
    out = {v: 0 for v in VERDICTS}
    for c in claims:
        out[c.verdict] += 1
    return out


def summary_text(counts: dict[str, int]) -> str:
    """``12 hold, 3 fail, 2 inconclusive, 1 not tested``."""
    words = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive",
             "not-tested": "not tested"}
    return ", ".join(f"{counts.get(v, 0)} {words[v]}" for v in VERDICTS)


EXPECTED_HEADER = ("id", "verdict", "reason")


def read_expected(path: str | Path) -> dict[str, str]:
    """The expected verdicts ``{id: verdict}`` of ``tests/data/claims_expected.csv``
    (header ``id,verdict,reason``; ``reason`` says why the verdict is what it is)."""
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = tuple(next(r))
        if header != EXPECTED_HEADER:
            raise ValueError(f"{path}: header {header} is not {EXPECTED_HEADER}")
        out: dict[str, str] = {}
        for row in r:
            if not row:
                continue
            cid, verdict = row[0], row[1]
            if verdict not in VERDICTS:
                raise ValueError(f"{path}: claim {cid}: bad verdict {verdict!r}")
            if cid in out:
                raise ValueError(f"{path}: claim {cid} listed twice")
            out[cid] = verdict
        return out


def compare(actual: list[Claim], expected: dict[str, str]) -> list[str]:
    """Differences between a run's claims and the expected verdicts, one line each, naming
    the claim and both verdicts. Empty when they agree."""
    got = {c.id: c.verdict for c in actual}
    lines = []
    for cid, want in expected.items():
        if cid not in got:
            lines.append(f"claim {cid}: expected {want!r}, but the run has no such claim")
        elif got[cid] != want:
            lines.append(f"claim {cid}: expected {want!r}, got {got[cid]!r}")
    for cid, v in got.items():
        if cid not in expected:
            lines.append(f"claim {cid}: got {v!r}, but it has no expected verdict: add it to "
                         "tests/data/claims_expected.csv with its reason")
    return lines
