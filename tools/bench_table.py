"""Markdown table from `python -m vocoders.bench` JSON lines (files or stdin; other lines are skipped).

python tools/bench_table.py bench.jsonl > table.md
"""

from __future__ import annotations

import fileinput
import json


def rows(lines):
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            yield json.loads(line)


def table(records) -> str:
    head = (
        "| model | H | engine | dtype | threads | batch | samples/s | RTF | reference samples/s | speed-up "
        "| floor samples/s | of floor | bound |"
    )
    lines = [head, "|---" * 13 + "|"]
    for r in records:
        floor = r.get("floor") or {}
        fraction = r.get("fraction_of_floor")
        lines.append(
            f"| {r['model']} | {r['model_kwargs'].get('hidden_size', '')} | {r['engine']} | {r['dtype']} "
            f"| {r['threads']} | {r['batch']} | {r['samples_per_second']:,.0f} | {r['realtime_factor']:.3f} "
            f"| {r['reference_samples_per_second'] or 0:,.0f} | {r.get('speedup_over_reference') or 0:.1f}x "
            f"| {r['floor_samples_per_second'] or 0:,.0f} | {'' if fraction is None else f'{fraction:.0%}'} "
            f"| {floor.get('bound', '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(rows(fileinput.input())))
