"""Print, per surface, each distinct aspect value the static reader sees across
release wheels, with the releases it occurs in. This is how the contracts in
driftcheck/catalog.py were derived; rerun it when adding releases.

usage: python scripts/derive_contracts.py WHEEL_OR_DIR [...]
"""

import sys
from pathlib import Path

from packaging.version import Version

from driftcheck.contracts.catalog import SURFACES
from driftcheck.readers.observe_static import observe_tree
from driftcheck.readers.source_tree import WheelTree, open_directory


def main(paths: list[str]) -> None:
    trees = [WheelTree(path=Path(p)) if p.endswith(".whl") else open_directory(p) for p in paths]
    trees.sort(key=lambda t: Version(t.version or "0"))
    seen: dict[str, dict[str, list[str]]] = {}
    for tree in trees:
        for sid, obs in observe_tree(tree).items():
            surface = next(s for s in SURFACES if s.id == sid)
            key = "; ".join(f"{a}={obs.aspects.get(a, '-')}" for a in ("present", *surface.aspects) if a != "present" or obs.aspects.get(a) == "no")
            seen.setdefault(sid, {}).setdefault(key, []).append(tree.version or tree.label)
    for sid, variants in seen.items():
        print(sid)
        for key, versions in variants.items():
            print(f"   {versions[0]}..{versions[-1]} ({len(versions)}): {key}")


if __name__ == "__main__":
    main(sys.argv[1:])
