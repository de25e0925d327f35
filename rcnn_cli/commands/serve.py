"""``rcnn serve``: the detector behind HTTP (predict/server.py), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from ..errors import UsageError
from ..predict.limits import ServeLimits
from ..settings.resolve import resolve
from . import console, plain, say, weights_or_default
from .options import ServeOptions


def build(options: ServeOptions):
    """(FastAPI app, what it serves): settings through the one rule, as rcnn predict loads them."""
    from ..export.compiled import load_fastest
    from ..predict.ensemble import load_ensemble
    from ..predict.server import build_app

    weights = weights_or_default(options.weights)
    overrides = options.overrides + (["model.tta=true"] if options.tta else [])
    settings = resolve("predict", overrides, weights=weights, config_dir=options.config_dir,
                       score_floor=options.conf)
    for note in settings.notes:
        say(f"note: {note}")
    if settings.members:
        predictor = load_ensemble(settings)
    else:
        predictor = load_fastest(settings.cfg, settings.checkpoint, typed=settings.typed, source=settings.weights,
                                 say=say, status=lambda text: console.status(plain(text)))
    if predictor.decision is not None:
        say(predictor.decision.line())
    return build_app(predictor, options.conf, options.limits, name=settings.weights.given), \
        predictor


def check_limits(limits: ServeLimits) -> None:
    """Refuses, in one line, limits that would refuse every request or never time out."""
    for flag, value in (("--max-body-mb", limits.max_body_mb), ("--max-pixels", limits.max_pixels),
                        ("--max-batch", limits.max_batch), ("--body-timeout", limits.body_timeout_s)):
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{flag} {value:g}: must be a positive number")
    if limits.max_wait_ms < 0 or limits.max_wait_ms != limits.max_wait_ms:
        raise UsageError(f"--max-wait-ms {limits.max_wait_ms:g}: must be 0 or more")


def run(options: ServeOptions) -> None:
    import uvicorn

    if not 0 < options.port < 65536:
        raise UsageError(f"--port {options.port}: must be 1-65535")
    check_limits(options.limits)
    app, predictor = build(options)
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"note: serving on {options.host}: reachable from other machines; there is no authentication")
    say(f"serving {predictor.runs_as} on {predictor.device.type}: POST http://{options.host}:{options.port}/predict "
        f"(image bytes or multipart), GET /health")
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")
