"""What strict input costs per submit: the strict JSON parser against ``json.loads``, and the
name checks (NFKC + safe set) against no check, on the body a pre-authorised submit sends.

    .venv/bin/python bench/input_bench.py [--rounds 5] [--number 20000]

Both sides of each pair are timed in the same run, interleaved, best of ``--rounds``; the
figures are microseconds per body. Compare them with the server CPU per submit that
``bench/api_bench.py`` prints (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

from bot.api.strict_json import strict_loads
from core.inputs import SubmitBody
from core.names import canonical

BODY = {
    "action": "db.query",
    "action_class": "read",
    "target": "orders-db",
    "environment": "production",
    "justification": "INC-42: read the failed orders of the last hour",
    "parameters": {"sql": "select id from orders where status = 'failed'", "limit": 500},
    "requested_ttl_seconds": 300,
}
RAW = json.dumps(BODY).encode("utf-8")
NAMES = (BODY["action"], BODY["target"], BODY["environment"])


def best(fn: Callable[[], object], number: int, rounds: int) -> float:
    """Best time of ``rounds`` runs of ``number`` calls, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    n, r = args.number, args.rounds

    def names() -> None:
        for name in NAMES:
            canonical(name)

    pairs = {
        "parse: json.loads": lambda: json.loads(RAW),
        "parse: strict_loads": lambda: strict_loads(RAW),
        "validate: SubmitBody (names checked)": lambda: SubmitBody.model_validate(BODY),
        "names alone: canonical() x3": names,
    }
    figures = {label: best(fn, n, r) for label, fn in pairs.items()}
    width = max(map(len, figures))
    for label, micros in figures.items():
        print(f"{label:<{width}}  {micros:8.2f} µs")
    added = (
        figures["parse: strict_loads"]
        - figures["parse: json.loads"]
        + figures["names alone: canonical() x3"]
    )
    print(f"{'added by strict input per submit':<{width}}  {added:8.2f} µs")


if __name__ == "__main__":
    main()
