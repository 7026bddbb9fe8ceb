#!/usr/bin/env python3
"""Parse a /metrics answer with the Python prometheus_client parsers.

Usage: parse-metrics.py [--format auto|prometheus|openmetrics] FILE   (FILE "-": stdin)

On success prints one line per sample, tab-separated: the sample name, its
labels as a JSON object (keys sorted) and its value, e.g.
    osih_requests_total<TAB>{"cloud": "charm", "status": "2xx"}<TAB>3.0
and exits 0. On text the parser refuses, prints the parser's error on stderr
and exits 1. "auto" (the default) takes the OpenMetrics parser when the text
ends with "# EOF" (as OpenMetrics requires), else the Prometheus text parser.

prometheus_client is in the bed's venv (constraints.txt): run the script with
any python3, it re-executes itself with the venv's python when needed.
"""

import json
import os
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
    from prometheus_client.parser import text_string_to_metric_families as prometheus
except ImportError:
    venv = os.environ.get("OSIH_BED_VENV",
                          os.path.expanduser("~/.cache/openstack-image-helper/venv"))
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv) or not os.path.exists(python):
        sys.exit(f"parse-metrics: prometheus_client is missing (looked in {venv}): run tests/openstack/up.sh")
    os.execv(python, [python, *sys.argv])


def main(argv):
    fmt = "auto"
    if len(argv) == 3 and argv[0] == "--format" and argv[1] in ("auto", "prometheus", "openmetrics"):
        fmt, argv = argv[1], argv[2:]
    if len(argv) != 1:
        sys.exit(__doc__.strip().splitlines()[2])
    try:
        if argv[0] == "-":
            text = sys.stdin.read()
        else:
            with open(argv[0], encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"parse-metrics: cannot read {argv[0]}: {e}")
    if fmt == "auto":
        fmt = "openmetrics" if text.rstrip("\n").endswith("# EOF") else "prometheus"
    parse = openmetrics if fmt == "openmetrics" else prometheus
    lines = []
    try:
        # The parsers are generators: an error shows only when it is reached.
        for family in parse(text):
            for s in family.samples:
                lines.append(f"{s.name}\t{json.dumps(s.labels, sort_keys=True)}\t{s.value}")
    except Exception as e:  # the parsers raise ValueError and others on bad text
        print(f"parse-metrics: not valid {fmt} text: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
