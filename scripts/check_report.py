"""Gate for CI after ``make demo``: fail if the report lists a failed figure.

Usage: ``python scripts/check_report.py [REPORT_DIR]`` (default ``report``). Reads
``REPORT_DIR/run.json`` (written by ``loradyn reproduce``); prints one line per failed item
and exits 1 if there is any, or if the report is missing. Pending items (no GPU, no
datasets) are listed but allowed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path("report")
    run = out / "run.json"
    if not run.is_file():
        print(f"check_report: {run} is missing: make demo did not finish", file=sys.stderr)
        return 1
    items = json.loads(run.read_text())["items"]
    failed = [i for i in items if i["status"] == "failed"]
    for i in items:
        if i["status"] == "pending":
            print(f"check_report: pending {i['id']}: {i['reason']}")
    for i in failed:
        print(f"check_report: FAILED {i['id']}: {i['reason']}", file=sys.stderr)
    done = sum(i["status"] == "done" for i in items)
    print(f"check_report: {done} done, {len(items) - done - len(failed)} pending, "
          f"{len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
