"""Compare the numeric figures of two runs' summary.json: which are identical, the largest relative differences.

    python scripts/compare_summaries.py A/summary.json B/summary.json [--top 10]
"""

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--top", type=int, default=10, help="how many differing figures to list")
    args = p.parse_args()
    a, b = (json.load(open(x)) for x in (args.a, args.b))
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    keys = sorted(k for k in a if num(a[k]) and num(b.get(k)))
    same = [k for k in keys if a[k] == b[k]]
    diff = sorted(((abs(a[k] - b[k]) / max(abs(a[k]), 1e-12), k) for k in keys if a[k] != b[k]), reverse=True)
    print(f"{len(keys)} numeric figures in both: {len(same)} identical, {len(diff)} differ")
    for r, k in diff[: args.top]:
        print(f"  {k}: {a[k]!r} vs {b[k]!r} (relative {r:.2g})")


if __name__ == "__main__":
    main()
