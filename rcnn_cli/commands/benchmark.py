"""``rcnn benchmark``: our detector (fp32, folded, bf16, int8) and torchvision's with the same
weights, timed side by side on the same images; table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.table import Table

from ..benchmark.exported import NOT_NATIVE, parse_formats
from ..benchmark.exported_profile import PROFILED_FORMATS
from ..benchmark.machine import precision_advice
from ..benchmark.run import benchmark
from ..data.samples import calibration_images
from ..errors import UsageError
from ..files import write_json
from ..inference.precision import MIN_AGREEMENT_MAP50
from ..settings.resolve import resolve
from . import console as stderr_console
from . import stdout
from .options import BenchmarkOptions


def load_images(cfg, source: str | None, count: int, split: str = "val") -> tuple[list[torch.Tensor], list[dict]]:
    """``count`` images (uint8 (3, H, W)) and their targets: from ``source`` (folder or glob; no
    targets) or from the configured dataset's ``split``."""
    from ..data.images import read_chw

    if source:
        from ..data.sources import expand_sources

        return [read_chw(p) for p in expand_sources([source])[0][:count]], []
    from ..data.readers.load import load_dataset

    records = load_dataset(cfg.dataset, (split,)).splits[split][:count]
    images = [read_chw(r.path) for r in records]
    targets = [{"boxes": torch.from_numpy(r.boxes), "labels": torch.from_numpy(r.labels) % 91} for r in records]
    return images, targets


def print_result(console, result: dict) -> None:
    inference = result["inference"]
    table = Table(title=f"{result['model']} at min_size {result['min_size']} on {result['machine']['cpu']} "
                        f"({result['machine']['cores']} cores, flags {', '.join(result['machine']['cpu_flags'])})",
                  title_justify="left")
    names = [n for n in ("torchvision", "ours", "ours_fast", "ours_bf16", "ours_int8") if n in inference]
    headers = {"torchvision": "torchvision", "ours": "ours (fp32)", "ours_fast": "ours (folded)",
               "ours_bf16": "ours (bf16)", "ours_int8": "ours (int8)"}
    if result["auto"] in headers:      # else auto runs an exported row (print_runtimes marks it)
        headers[result["auto"]] += " = auto"
    table.add_column("", justify="right")
    for name in names:
        table.add_column(headers[name], justify="right")
    table.add_row("latency, batch 1 (ms/img)",
                  *[f"{inference[n]['latency_batch1']['median_s'] * 1000:.0f}" for n in names])
    table.add_row("  quartiles", *[f"{inference[n]['latency_batch1']['q1_s'] * 1000:.0f}-"
                                   f"{inference[n]['latency_batch1']['q3_s'] * 1000:.0f}" for n in names])
    table.add_row(f"throughput, batch {inference['ours']['batch']} (img/s)",
                  *[f"{inference[n]['throughput_images_per_s']:.2f}" for n in names])
    table.add_row(f"speed-up vs {headers[result['baseline']]}", *[f"{result['speedup'][n]:.2f}x" for n in names])
    table.add_row("peak RSS (MB)", *[f"{inference[n]['peak_rss_mb']:.0f}" for n in names])
    agreement = result["agreement_map50"]
    console.print(table)
    if result.get("no_torchvision_twin"):
        console.print(f"no torchvision column: {result['no_torchvision_twin']}", highlight=False)

    def shown(value):
        return "n/a (no detections to compare)" if value is None else f"{value:.4f}"

    bf16 = f", bf16 vs fp32 {shown(agreement['bf16_vs_fp32'])}" if "bf16_vs_fp32" in agreement else ""
    int8 = (f", int8 vs fp32 {shown(agreement['int8_vs_fp32'])} (calibrated on {result['int8_calibration_images']} "
            "images)") if "int8_vs_fp32" in agreement else ""
    twin = (f"ours vs torchvision {shown(agreement['ours_vs_torchvision'])}, "
            if "ours_vs_torchvision" in agreement else "")
    if "training" in result:
        train, speedup = result["training"], result["speedup"]
        step = {name: train[name]["train_step"]["median_s"] for name in train}
        console.print(f"training step, batch {train['ours']['batch']}: torchvision fp32 {step['torchvision']:.2f} s; "
                      f"ours fp32 {step['ours']:.2f} s ({speedup['train_step']:.2f}x); ours as rcnn train runs it "
                      f"({train['ours_auto']['precision']}, channels_last) {step['ours_auto']:.2f} s "
                      f"({speedup['train_step_auto']:.2f}x)", highlight=False)
    console.print(f"agreement mAP50: {twin}folded vs fp32 {shown(agreement['fast_vs_fp32'])}{bf16}{int8}",
                  highlight=False)
    print_goals(console, result)


def print_goals(console, result: dict) -> None:
    """The goal figures (benchmark/run.goal_ratios): default path and the fastest agreeing path against the
    baseline, and the training step as rcnn train runs it."""
    goals = result["goals"]
    base = "torchvision fp32" if goals["baseline"] == "torchvision" else "ours fp32"
    agreement = ("n/a" if goals["default_agreement"] is None else f"{goals['default_agreement']:.3f}")
    line = (f"vs {base} ({result['weights']} weights): default path ({goals['default_path']}, agreement "
            f"{agreement}) {goals['default_speedup']:.2f}x; fastest path that agrees >= {MIN_AGREEMENT_MAP50} "
            f"({goals['best_agreeing_path']}) {goals['best_agreeing_speedup']:.2f}x")
    if "train_step_speedup" in goals:
        line += f"; training step as rcnn train runs it {goals['train_step_speedup']:.2f}x"
    console.print(line, highlight=False, markup=False)


RUNTIME_TITLES = {"onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8", "openvino_f32": "OpenVINO f32",
                  "openvino_bf16": "OpenVINO bf16 hint", "openvino_int8": "OpenVINO int8",
                  "openvino_int8_bf16": "OpenVINO int8, bf16 hint",
                  "torchscript_fp32": "TorchScript fp32", "torchscript_fp16": "TorchScript fp16 (--half)"}


def print_runtimes(console, result: dict) -> None:
    """One row per runtime on the same images: torch and torchvision (from the main table), then the
    exported files; speed-up against torchvision fp32 eager at batch 1."""
    inference, agreement = result["inference"], result["agreement_map50"]
    table = Table(title=f"runtimes on the same {result['images']} images", title_justify="left")
    speedup = "x torchvision fp32" if "torchvision" in inference else "x ours fp32"
    for header in ("runtime", "what runs it", "file size (MB)", "ms/img, batch 1", speedup,
                   "img/s, a batch in flight", "agreement mAP50 with fp32 torch"):
        table.add_column(header, justify="left" if header in ("runtime", "what runs it") else "right")
    base = inference.get("torchvision", inference["ours"])["latency_batch1"]["median_s"]
    size = f"{result['torch_weights_bytes'] / 1e6:.1f}"
    table.add_row("torch fp32 (ours)", "torch eager", size, _ms(inference["ours"]), _ratio(base, inference["ours"]),
                  "", "1 (the reference)")
    if "torchvision" in inference:
        table.add_row("torchvision fp32", "torchvision eager", size, _ms(inference["torchvision"]), "1.00", "",
                      _shown(agreement["ours_vs_torchvision"]))
    for name, row in result["exported"].items():
        if "skipped" in row:
            table.add_row(RUNTIME_TITLES[name], row["skipped"], "", "", "", "", "")
            continue
        flight = row["throughput"]
        title = RUNTIME_TITLES[name] + (" = auto" if name == result["auto"] else "")
        table.add_row(title, row["runs_as"], f"{row['size_bytes'] / 1e6:.1f}", _ms(row),
                      _ratio(base, row), f"{flight['images_per_s']:.1f} ({flight['in_flight']} at once)",
                      _shown(row["agreement_map50"]))
    console.print(table)
    if any(row.get("skipped") == NOT_NATIVE for row in result["exported"].values()):
        console.print("bf16 hint: not native here (no avx512_bf16/AMX), where OpenVINO emulates it slower than f32",
                      highlight=False)


def _ratio(base_s: float, figures: dict) -> str:
    return f"{base_s / figures['latency_batch1']['median_s']:.2f}"


def _ms(figures: dict) -> str:
    return f"{figures['latency_batch1']['median_s'] * 1000:.0f}"


def _shown(value) -> str:
    return "n/a (no detections to compare)" if value is None else f"{value:.4f}"


def print_scaling(console, rows: list[dict]) -> None:
    sizes = sorted({row["min_size"] for row in rows})
    proposals = sorted({row["proposals"] for row in rows})
    table = Table(title="model.precision=auto, batch-1 latency (ms/img) by input size and proposals",
                  title_justify="left")
    table.add_column("min_size", justify="right")
    for count in proposals:
        table.add_column(f"{count} proposals", justify="right")
    cells = {(row["min_size"], row["proposals"]): row["latency_batch1"]["median_s"] * 1000 for row in rows}
    for size in sizes:
        table.add_row(str(size), *[f"{cells[size, count]:.0f}" for count in proposals])
    console.print(table)


def run(options: BenchmarkOptions) -> dict:
    if options.profile and (options.scaling or options.data_scale or options.load_scale):
        raise UsageError("--profile runs on its own: drop --scaling, --data-scale and --load-scale")
    if options.data_scale or options.load_scale:
        return data_scale_command(options.data_scale, options.json_path, stdout, options.load_scale)
    formats = parse_formats(options.formats)
    if options.profile and (unprofiled := [name for name in formats if name not in PROFILED_FORMATS]):
        raise UsageError(f"--profile --formats {unprofiled[0]}: the stage profile reads the runtimes' own profilers, "
                         f"which {' and '.join(PROFILED_FORMATS)} have; use --formats "
                         f"{','.join(PROFILED_FORMATS)}")
    settings = resolve("benchmark", options.overrides, weights=options.weights, config_dir=options.config_dir)
    for note in settings.notes:
        stderr_console.print(f"note: {note}", highlight=False, markup=False)
    if options.profile:
        return profile_command(settings.cfg, options, stdout, settings.checkpoint, formats)
    try:
        return benchmark_command(settings.cfg, options.images, options.count, options.batch, options.repeats,
                                 options.warmup, options.train, options.json_path, stdout, options.scaling,
                                 formats, settings.checkpoint)
    except ValueError as err:
        raise UsageError(str(err)) from None


def benchmark_command(cfg, images_source, count, batch, repeats, warmup, train, json_path, console,
                      scaling: bool = False, formats: list[str] = (), checkpoint: tuple | None = None) -> dict:
    images, targets = load_images(cfg, images_source, count)
    # int8's ranges come from training images, as in rcnn eval, so that the agreement is measured
    # on images calibration did not see; with --images SRC the first 16 of those calibrate.
    calibration = calibration_images([images_source] if images_source else None,
                                     OmegaConf.to_container(cfg.dataset, resolve=True)).images or images
    if not images:
        raise ValueError("no images to benchmark on")
    from ..hardware import resolve_device

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    result = benchmark(model_cfg, images, targets, batch=batch, repeats=repeats, warmup=warmup, train=train,
                       calibration=calibration, scaling=scaling, formats=formats, device=resolve_device(cfg.device),
                       checkpoint=checkpoint)
    print_result(console, result)
    if "exported" in result:
        print_runtimes(console, result)
    if scaling:
        print_scaling(console, result["scaling"])
    console.print(precision_advice(), highlight=False, markup=False)
    if json_path:
        write_json(Path(json_path), result)
        console.print(f"written to {json_path}", highlight=False, markup=False)
    return result


def profile_command(cfg, options: BenchmarkOptions, console, checkpoint: tuple | None = None,
                    formats: list[str] = ()) -> dict:
    """``--profile``: ms per image of each inference stage for every torch path, the exported files of
    ``formats``, and a training step."""
    from ..benchmark.profile import stage_profile

    images, _ = load_images(cfg, options.images, options.count)
    if not images:
        raise UsageError("no images to profile on")
    calibration = calibration_images([options.images] if options.images else None,
                                     OmegaConf.to_container(cfg.dataset, resolve=True)).images or images
    result = stage_profile(cfg, images, calibration, options.repeats, options.warmup, options.train, options.batch,
                           checkpoint, say=lambda line: stderr_console.print(line, highlight=False, markup=False))
    if formats:
        from ..benchmark.exported_profile import profile_exported

        stderr_console.print(f"profile: exported files ({', '.join(formats)}), by their runtimes' profilers",
                             highlight=False, markup=False)
        result["exported"] = profile_exported(OmegaConf.to_container(cfg.model, resolve=True), images, calibration,
                                              formats, options.repeats, options.warmup, checkpoint)
    print_profile(console, result)
    if options.json_path:
        write_json(Path(options.json_path), result)
        console.print(f"written to {options.json_path}", highlight=False, markup=False)
    return result


PROFILE_TITLES = {"torchvision": "torchvision fp32", "ours": "ours fp32", "ours_fast": "ours folded",
                  "ours_bf16": "ours bf16", "ours_int8": "ours int8",
                  "ours_train": "ours, as rcnn train runs it (channels_last, autocast where it pays)"}


def print_profile(console, result: dict) -> None:
    from ..benchmark.profile import table_rows

    estimate = result["peak"]
    rates = ", ".join(f"{p} {rate:.0f}" for p, rate in estimate["gflop_per_s"].items())
    console.print(f"{result['model']} at min_size {result['min_size']}, {result['images']} images, on "
                  f"{estimate['hardware']}: nominal peak GFLOP/s {rates or 'unknown'} ({estimate['cores']} cores x "
                  f"{estimate['clock_ghz'] or 0:.2f} GHz from {estimate['clock_source']} x FLOPs per cycle "
                  f"{estimate['flops_per_cycle']}; torch uses {estimate['torch_threads']} threads)",
                  highlight=False, markup=False)
    for part in ("inference", "training"):
        for name, profile in result.get(part, {}).items():
            headers, cells = table_rows(profile)
            if part == "inference":
                title = (f"inference, {PROFILE_TITLES[name]}: {profile['total_ms']:.0f} ms/img "
                         f"(whole forward without hooks: {profile['plain_forward_ms']:.0f})")
            else:
                title = f"training step, batch {profile['batch']}, {PROFILE_TITLES[name]}: {profile['total_ms']:.0f} ms"
            table = Table(title=title, title_justify="left")
            for header in headers:
                table.add_column(header, justify="left" if header == "stage" else "right")
            for row in cells:
                table.add_row(*row)
            console.print(table)
    console.print("FLOPs count convolutions and matrix products; int8 shows the folded model's counts "
                  "(FlopCounterMode cannot run quantized tensors).", highlight=False, markup=False)
    for name, profile in result.get("exported", {}).items():
        print_exported_profile(console, name, profile)


def print_exported_profile(console, name: str, profile: dict) -> None:
    """One exported file's stages, as its runtime's profiler timed them (benchmark/exported_profile.py)."""
    if "skipped" in profile:
        console.print(f"exported, {RUNTIME_TITLES[name]}: {profile['skipped']}", highlight=False, markup=False)
        return
    table = Table(title=f"exported, {RUNTIME_TITLES[name]} ({profile['runs_as']}, its profiler): "
                        f"{profile['total_ms']:.0f} ms/img in {profile['nodes']} nodes (the runtime's own time per "
                        f"run: {profile['runtime_run_ms']:.0f})", title_justify="left")
    for header in ("stage", "ms/img", "share"):
        table.add_column(header, justify="left" if header == "stage" else "right")
    for row in profile["rows"]:
        table.add_row(row["stage"], f"{row['ms']:.1f}", f"{row['share']:.1%}")
    console.print(table)
    if unplaced := profile["unplaced_nodes"]:
        console.print("  in other, most costly: " + ", ".join(f"{n['node']} {n['ms']:.1f} ms" for n in unplaced),
                      highlight=False, markup=False)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2)


def data_scale_command(text: str | None, json_path: Path | None, console, load_text: str | None = None) -> dict:
    """``--data-scale N[,N...]``: the data side (annotation loading, data check, evaluation,
    DataLoader) on generated COCO sets of N images each; no model. ``--load-scale N[,N...]``:
    annotation loading alone, on sets whose image files are links to a few pictures."""
    from ..benchmark.scale import scale_benchmark

    counts, load_counts = image_counts(text, "--data-scale"), image_counts(load_text, "--load-scale")
    result = scale_benchmark(counts, lambda line: stderr_console.print(line, highlight=False, markup=False),
                             load_counts=load_counts)
    print_scale(console, result)
    if json_path:
        write_json(Path(json_path), result)
        console.print(f"written to {json_path}", highlight=False, markup=False)
    return result


def image_counts(text: str | None, option: str) -> list[int]:
    if not text:
        return []
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} takes image counts such as 1000,10000, not {text!r}") from None
    if any(n < 2 for n in counts):
        raise UsageError(f"{option} needs image counts of at least 2, got {text}")
    return counts


def print_scale(console, result: dict) -> None:
    if result["points"]:
        print_scale_points(console, result)
    for point in result.get("load_only", []):
        console.print(f"load annotations alone, {point['images']:,} images ({point['boxes']:,} boxes, "
                      f"{point['annotations_mb']:g} MB of JSON; image files linked to a few pictures): "
                      f"{point['load_s']:g} s, peak memory {point['load_peak_mb']:g} MB", highlight=False)


def print_scale_points(console, result: dict) -> None:
    machine = result["machine"]
    table = Table(title=f"data at scale on {machine['cpu']} ({machine['cores']} cores, "
                        f"{', '.join(machine['cpu_flags'])})", title_justify="left")
    columns = [*result["points"], *([result["extrapolated"]] if result["extrapolated"] else [])]
    table.add_column("", justify="right")
    for column in columns:
        table.add_column(f"{column['images']:,} images" + (" (est.)" if "method" in column else ""), justify="right")

    def row(title: str, key: str, unit: str = "") -> None:
        table.add_row(title, *[f"{c[key]:g}{unit}" if key in c else "" for c in columns])

    row("load annotations (s)", "load_s")
    row("  peak memory (MB)", "load_peak_mb")
    row("data check (s)", "check_s")
    row("  peak memory (MB)", "check_peak_mb")
    row("COCO eval (s)", "eval_s")
    row("  images x 100 detections", "eval_images")
    row("  faster-coco-eval alone (s)", "eval_faster_coco_eval_alone_s")
    row("DataLoader, 0 workers (img/s)", "loader_images_per_s_workers0")
    row("DataLoader, 2 workers (img/s)", "loader_images_per_s_workers2")
    console.print(table)
    if result["extrapolated"]:
        console.print(f"est.: {result['extrapolated']['method']}", highlight=False)
