"""Regenerate the REGISTRY block of loading_script/fusionrs.py from fusionrs_hf.layout.

The loading script must run where fusionrs_hf is not installed (a Hub script under datasets < 4),
so it carries a copy of the registry; this keeps the copy equal to the source of truth.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fusionrs_hf.layout import registry_dict

SCRIPT = Path(__file__).resolve().parents[1] / "loading_script" / "fusionrs.py"
BLOCK = re.compile(r'(REGISTRY = json\.loads\(\n    r""")\n.*?\n(""")', re.S)


def main() -> int:
    text = SCRIPT.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: f"{m[1]}\n{json.dumps(registry_dict(), indent=4)}\n{m[2]}", text)
    if new != text:
        SCRIPT.write_text(new, encoding="utf-8")
        print(f"updated {SCRIPT}")
    else:
        print(f"{SCRIPT} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
