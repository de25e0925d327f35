"""The stage profile JSON of `rcnn benchmark --profile --json F` as the compact markdown tables of docs/speed.md
("Where the time goes"): per stage, ms/img and share for every path side by side (the exported files of
--formats onnx,openvino after the torch paths, by their runtimes' profilers), then GFLOP and the share of
the nominal peak, then the training step. Run: .venv/bin/python measurements/profile_tables.py F"""

import json
import sys

from rcnn_cli.commands.benchmark import RUNTIME_TITLES

TITLES = {"torchvision": "torchvision fp32", "ours": "ours fp32", "ours_fast": "ours folded", "ours_bf16": "ours bf16",
          "ours_int8": "ours int8", "ours_train": "as `rcnn train` runs it", **RUNTIME_TITLES}


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def inference_tables(result: dict) -> str:
    paths = result["inference"]
    exported = {name: path for name, path in result.get("exported", {}).items() if "skipped" not in path}
    timed = {**paths, **exported}
    stages = [row["stage"] for row in next(iter(paths.values()))["rows"]]
    rows_of = {name: {row["stage"]: row for row in path["rows"]} for name, path in timed.items()}
    times = [[stage, *(f"{_ms(rows_of[n][stage]['ms'])} ({rows_of[n][stage]['share']:.0%})" for n in timed)]
             for stage in stages]
    times.append(["**sum of stages**", *(f"**{_ms(p['total_ms'])}**" for p in timed.values())])
    times.append(["whole forward, no hooks", *(_ms(p["plain_forward_ms"]) for p in paths.values()),
                  *([""] * len(exported))])
    if exported:
        times.append(["the runtime's own time per run", *([""] * len(paths)),
                      *(_ms(p["runtime_run_ms"]) for p in exported.values())])
    heavy = [s for s in stages if rows_of["ours"][s]["gflop"]]
    rates = [[stage, f"{rows_of['ours'][stage]['gflop']:.1f}",
              *(_peak(rows_of[n][stage]) for n in paths)] for stage in heavy]
    return (markdown(["stage, ms/img (share)", *(TITLES[n] for n in timed)], times) + "\n\n"
            + markdown(["stage", "GFLOP/img", *(f"{TITLES[n]}: % of peak" for n in paths)], rates))


def _ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def _peak(row: dict) -> str:
    return "" if row["peak_share"] is None else f"{row['peak_share']:.1%} ({row['precision']})"


def training_table(result: dict) -> str:
    paths = result["training"]
    stages = [row["stage"] for row in next(iter(paths.values()))["rows"]]
    rows_of = {name: {row["stage"]: row for row in path["rows"]} for name, path in paths.items()}
    headers = ["stage", "GFLOP/step"]
    for name in paths:
        headers += [f"{TITLES[name]}: forward + backward ms (share)", "% of peak"]
    rows = []
    for stage in stages:
        cells = [stage, f"{rows_of['ours'][stage]['gflop']:.0f}" if rows_of["ours"][stage]["gflop"] else ""]
        for name in paths:
            row = rows_of[name][stage]
            cells += [f"{row['forward_ms']:.0f} + {row['backward_ms']:.0f} ({row['share']:.0%})", _peak(row)]
        rows.append(cells)
    rows.append(["**step**", "", *[cell for p in paths.values() for cell in (f"**{p['total_ms']:.0f}**", "")]])
    return markdown(headers, rows)


def main(path: str) -> None:
    result = json.loads(open(path).read())
    peak = result["peak"]
    print(f"{result['model']} at min_size {result['min_size']}, {result['images']} images; {peak['hardware']}; "
          f"peak GFLOP/s {peak['gflop_per_s']} ({peak['cores']} cores x {peak['clock_ghz']:.2f} GHz x "
          f"{peak['flops_per_cycle']})\n")
    print(inference_tables(result) + "\n")
    if "training" in result:
        print(f"training step, batch {next(iter(result['training'].values()))['batch']}\n")
        print(training_table(result))


if __name__ == "__main__":
    main(sys.argv[1])
