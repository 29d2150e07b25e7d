"""Compare a run's claims with the expected verdicts (the regression guard of CI).

Usage: ``python scripts/check_claims.py report/claims.csv tests/data/claims_expected.csv``

Exits 1 and prints one line per difference, naming the claim and both verdicts, when a
verdict changed, a claim disappeared or a new claim has no expected verdict. A change of
verdict must be made on purpose: update ``tests/data/claims_expected.csv`` (with the
reason) in the same commit as the change that causes it. The expected file holds the
verdicts of ``make demo`` (``loradyn reproduce --scale quick``).
"""

from __future__ import annotations

import sys

from loradyn.reproduce.claims import compare, read_csv, read_expected


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_claims.py CLAIMS_CSV EXPECTED_CSV", file=sys.stderr)
        return 2
    diffs = compare(read_csv(argv[0]), read_expected(argv[1]))
    for line in diffs:
        print(f"claims check: {line}", file=sys.stderr)
    if diffs:
        print(f"claims check: {len(diffs)} difference(s) between {argv[0]} and {argv[1]}",
              file=sys.stderr)
        return 1
    print(f"claims check: every verdict in {argv[0]} is as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
