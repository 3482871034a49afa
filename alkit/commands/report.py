"""``alkit report RUN_DIR`` (iteration dashboard) and ``alkit compare RUN_A RUN_B ...`` (run comparison)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="HTML dashboard (self-contained) + PNG figures of one run; safe while the run is going",
        description="Build RUN_DIR/report/index.html and PNG figures from the run's event log and DIRECT PCs.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds events.jsonl)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: RUN_DIR/report)")
    p.set_defaults(func=_report)

    c = sub.add_parser(
        "compare",
        help="compare runs (e.g. DIRECT-seeded vs from scratch): stability per temperature, labels, summary table",
        description="Write compare.html, compare.md and PNG figures, and print the summary table.",
    )
    c.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories to compare")
    c.add_argument("--out", metavar="DIR", default="compare", help="output folder (default: ./compare)")
    c.set_defaults(func=_compare)


def _report(args) -> int:
    from alkit.report import build_report

    path = build_report(args.run_dir, args.out)
    print(path.resolve())
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from alkit.compare import compare_runs

    path = compare_runs(args.run_dirs, args.out)
    print((Path(path).parent / "compare.md").read_text(encoding="utf-8"))
    print(path.resolve())
    return 0
