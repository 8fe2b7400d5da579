"""Where a stage's time goes: sums the per-step times a run wrote with
``TESSERA_STEP_TIMES=<file>`` (every SQL step of the DuckDB engine, by name).

    TESSERA_STEP_TIMES=/tmp/steps.jsonl .venv/bin/python bench/pipeline.py ...
    .venv/bin/python bench/step_times.py /tmp/steps.jsonl [--top 40] [--prefix identity.]
"""

from __future__ import annotations

import argparse
import collections
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--prefix", default="", help="only steps whose name starts with this")
    args = parser.parse_args()
    total: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    with open(args.file, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["step"].startswith(args.prefix):
                total[rec["step"]] += rec["s"]
                calls[rec["step"]] += 1
    print(f"{'seconds':>9} {'calls':>6}  step")
    for name, seconds in sorted(total.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{seconds:9.2f} {calls[name]:6d}  {name}")
    print(f"{sum(total.values()):9.2f} {sum(calls.values()):6d}  (all {len(total)} steps)")


if __name__ == "__main__":
    main()
