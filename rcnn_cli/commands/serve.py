"""``rcnn serve``: the detector behind HTTP (predict/server.py), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..settings import resolve
from . import lower_score_floor, say, weights_or_default


@dataclass
class ServeOptions:
    weights: Path | str | None = None
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    conf: float = 0.25
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_body_mb: float = 20.0


def build(options: ServeOptions):
    """(FastAPI app, what it serves): settings through the one rule, as rcnn predict loads them."""
    from ..predict.server import ServeLimits, build_app
    from ..runtime.predictor import load_predictor

    weights = weights_or_default(options.weights)
    settings = resolve("predict", options.overrides, weights=weights, config_dir=options.config_dir)
    lower_score_floor(settings, options.conf)
    for note in settings.notes:
        say(f"note: {note}")
    predictor = load_predictor(settings.cfg, settings.checkpoint, typed=settings.typed)
    if predictor.decision is not None:
        say(predictor.decision.line())
    limits = ServeLimits(options.max_body_mb, int(settings.cfg.dataset.max_image_pixels), options.max_batch,
                         options.max_wait_ms)
    return build_app(predictor, options.conf, limits, name=str(weights)), predictor


def run(options: ServeOptions) -> None:
    import uvicorn

    if not 0 < options.port < 65536:
        raise UsageError(f"--port {options.port}: must be 1-65535")
    app, predictor = build(options)
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"note: serving on {options.host}: reachable from other machines; there is no authentication")
    say(f"serving {predictor.runs_as} on {predictor.device.type}: POST http://{options.host}:{options.port}/predict "
        f"(image bytes or multipart), GET /health")
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
