"""Summarise one mutmut 3 run (called by tools/mutation.sh from the run's work folder).

    python tools/mutation_report.py MODULE PATTERN [PATTERN ...]
    python tools/mutation_report.py --collect WORK     # markdown tables of every module under WORK

Reads ``mutants/**/*.meta`` in the current folder (a mutmut work copy), keeps the mutants whose names
match one of the fnmatch PATTERNs (the ones the run tested), and writes ``summary.json`` and
``summary.md``: counts per status, and every surviving mutant with its diff, marked ``equivalent`` when
``tools/mutation_equivalent.tsv`` (next to this file) lists it with a reason.

``mutation_equivalent.tsv`` lines: ``FUNCTION<TAB>MUTATED TEXT<TAB>REASON``. FUNCTION is the mutmut
function key without the mutant number (``fusionrs_hf.metrics.x__as_array``); MUTATED TEXT is a piece of
the mutant's changed line(s) (the ``+`` side of the diff, whitespace collapsed; ``-TEXT`` matches a mutant
that removed TEXT), so the entry survives a renumbering of the mutants when other functions of the file
change.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "type check", None: "not checked",
          -11: "segfault", -9: "segfault"}
HERE = Path(__file__).resolve().parent


def _equivalents() -> list[tuple[str, str, str]]:
    path = HERE / "mutation_equivalent.tsv"
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                func, text, reason = line.split("\t", 2)
                out.append((func.strip(), " ".join(text.split()), reason.strip()))
    return out


def _diff(name: str) -> str:
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        return get_diff_for_mutant(name)
    except Exception:  # noqa: BLE001 - internal API: fall back to the command
        p = subprocess.run(["mutmut", "show", name], capture_output=True, text=True)
        return p.stdout


def _changed(diff: str) -> tuple[str, str]:
    minus = " ".join(" ".join(x[1:].split()) for x in diff.splitlines() if x.startswith("-") and not x.startswith("---"))
    plus = " ".join(" ".join(x[1:].split()) for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++"))
    return minus, plus


def collect(work: Path) -> str:
    """Counts per module, the snapshot each ran on, and every surviving mutant (for MUTATION.md)."""
    rows = ["| module | mutants tested | killed | survived | equivalent | timeout | killed / non-equivalent | "
            "seconds | snapshot |", "|---|---|---|---|---|---|---|---|---|"]
    details = []
    for summary in sorted(work.glob("*/summary.json")):
        d = json.loads(summary.read_text())
        snap = (summary.parent / "snapshot.txt").read_text().splitlines() if (summary.parent / "snapshot.txt").exists() \
            else []
        info = dict(line.split(": ", 1) for line in snap[:3] if ": " in line)
        secs = (summary.parent / "seconds").read_text().strip() if (summary.parent / "seconds").exists() else ""
        rows.append(f"| {d['module']} | {d['mutants']} | {d['killed']} | {d['survived']} | {d['equivalent']} | "
                    f"{d['timeout']} | {d['score_non_equivalent']}% | {secs} | {info.get('commit', '?')} "
                    f"{info.get('date', '')} |")
        if d["survivors"]:
            details += ["", f"### {d['module']}: surviving mutants", ""]
            for s in d["survivors"]:
                tag = f"equivalent: {s['equivalent']}" if s["equivalent"] else "**not killed**"
                details.append(f"- `{s['name'].split('.', 1)[1]}`: `{s['before'][:160]}` -> `{s['after'][:160]}`; "
                               f"{tag}")
    return "\n".join(rows + details) + "\n"


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--collect":
        sys.stdout.write(collect(Path(argv[1])))
        return 0
    module, patterns = argv[0], argv[1:]
    codes: dict[str, int | None] = {}
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    chosen = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in patterns)}
    counts = Counter(STATUS.get(v, "suspicious") for v in chosen.values())
    eq = _equivalents()
    survivors = []
    for name in sorted(k for k, v in chosen.items() if STATUS.get(v) == "survived"):
        func = name.rsplit("__mutmut_", 1)[0]
        diff = _diff(name)
        minus, plus = _changed(diff)
        reason = next((r for f, t, r in eq if f == func and t and (
            t in plus if not t.startswith("-") else (t[1:] in minus and t[1:] not in plus))), None)
        survivors.append({"name": name, "function": func, "before": minus, "after": plus,
                          "equivalent": reason, "diff": diff})
    n_eq = sum(1 for s in survivors if s["equivalent"])
    killed = counts.get("killed", 0)
    survived = counts.get("survived", 0) - n_eq
    timeout = counts.get("timeout", 0)
    non_eq = killed + survived + timeout
    score = 100.0 * (killed + timeout) / non_eq if non_eq else 100.0
    summary = {"module": module, "patterns": patterns, "mutants": len(chosen), "killed": killed,
               "survived": survived, "equivalent": n_eq, "timeout": timeout,
               "other": {k: v for k, v in counts.items() if k not in ("killed", "survived", "timeout")},
               "score_non_equivalent": round(score, 1), "survivors": survivors}
    Path("summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    lines = [f"## {module}", "", f"mutants tested: {len(chosen)}; killed {killed}, survived {survived}, "
             f"equivalent {n_eq}, timeout {timeout}, other {summary['other'] or 0}; "
             f"killed among non-equivalent: {score:.1f}%", ""]
    for s in survivors:
        tag = f"equivalent: {s['equivalent']}" if s["equivalent"] else "SURVIVED"
        lines += [f"- `{s['name']}` ({tag})", f"  - before: `{s['before'][:300]}`", f"  - after:  `{s['after'][:300]}`"]
    Path("summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{module}: {len(chosen)} mutants, killed {killed}, survived {survived}, equivalent {n_eq}, "
          f"timeout {timeout}, other {summary['other'] or 0}, score {score:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
