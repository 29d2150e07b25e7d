"""The regression guard: scripts/check_claims.py against tests/data/claims_expected.csv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loradyn.reproduce.claims import read_expected, write_csv
from loradyn.reproduce.registry import VERDICTS, Claim

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_claims.py"
EXPECTED = ROOT / "tests" / "data" / "claims_expected.csv"


def _claims(**verdicts: str) -> list[Claim]:
    return [Claim(cid.replace("_", "-"), "s", "t", "1", "e", v) for cid, v in verdicts.items()]


def _expected(path: Path, **verdicts: str) -> Path:
    path.write_text("id,verdict,reason\n" + "".join(
        f"{cid.replace('_', '-')},{v},why\n" for cid, v in verdicts.items()))
    return path


def _run(claims: Path, expected: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(claims), str(expected)],
                          capture_output=True, text=True, timeout=60)


def test_same_verdicts_pass(tmp_path):
    c = write_csv(_claims(E5_mean="holds", K1="inconclusive"), tmp_path / "claims.csv")
    r = _run(c, _expected(tmp_path / "exp.csv", E5_mean="holds", K1="inconclusive"))
    assert r.returncode == 0, r.stderr


def test_changed_verdict_names_the_claim_and_both_verdicts(tmp_path):
    c = write_csv(_claims(E5_mean="fails", K1="inconclusive"), tmp_path / "claims.csv")
    r = _run(c, _expected(tmp_path / "exp.csv", E5_mean="holds", K1="inconclusive"))
    assert r.returncode == 1
    assert "claim E5-mean: expected 'holds', got 'fails'" in r.stderr
    assert "K1" not in r.stderr


def test_new_and_missing_claims_fail(tmp_path):
    c = write_csv(_claims(E5_mean="holds", NEW="holds"), tmp_path / "claims.csv")
    r = _run(c, _expected(tmp_path / "exp.csv", E5_mean="holds", K1="fails"))
    assert r.returncode == 1
    assert "claim NEW: got 'holds', but it has no expected verdict" in r.stderr
    assert "claim K1: expected 'fails', but the run has no such claim" in r.stderr


def test_expected_file_is_well_formed():
    exp = read_expected(EXPECTED)
    assert len(exp) >= 40
    assert set(exp.values()) <= set(VERDICTS)
    # the quick-scale run makes every figure that needs no dataset or GPU
    assert "not-tested" not in {v for k, v in exp.items() if not k.startswith("J")}
