"""Turn pip's installation report (pip install --dry-run --report) into a constraints
file: one ``name==version`` line per distribution pip would install, sorted."""

import json
import sys

report = json.load(open(sys.argv[1]))  # noqa: SIM115 - read once, closed at exit
pins = sorted(
    (item["metadata"]["name"].lower(), item["metadata"]["version"]) for item in report["install"]
)
for name, version in pins:
    print(f"{name}=={version}")
