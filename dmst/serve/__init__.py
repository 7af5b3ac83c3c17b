"""``dmst serve``: the HTTP service (FastAPI + uvicorn; ``pip install "dmst[serve]"``).

    dmst serve                                   # http://127.0.0.1:8000, docs at /docs, page at /
    dmst serve --host 0.0.0.0 --api-key KEY --workers 4 --data-dir /var/lib/dmst

The app itself is :func:`dmst.serve.app.create_app`; this module is its command line.
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from .settings import ServeSettings

    d = ServeSettings()
    p = argparse.ArgumentParser(prog="dmst serve", description="Serve dmst over HTTP: a JSON/multipart API (OpenAPI "
                                "at /docs) and a web page at /.")
    p.add_argument("--host", default=d.host, help="address to bind [127.0.0.1]; any other than loopback needs "
                   "--api-key or --insecure")
    p.add_argument("--port", type=int, default=d.port, help="[8000]")
    p.add_argument("--model", default=d.model, metavar="M", help="the model served as 'default': a model file or run "
                   "folder ['default': the bundled model]")
    p.add_argument("--workers", type=int, default=d.workers, metavar="N", help="worker processes, each with the model "
                   "loaded once [1]")
    p.add_argument("--api-key", default=os.environ.get("DMST_API_KEY"), metavar="KEY",
                   help="require this key on every /v1 route (X-API-Key header); default: $DMST_API_KEY")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--data-dir", default=str(d.data_dir), metavar="DIR", help="job store, uploads, results and "
                   "fine-tuned models [./dmst-data]")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="[200]")
    g.add_argument("--max-duration-s", type=float, default=d.max_duration_s, help="longest audio for a job [1800]")
    g.add_argument("--max-sync-duration-s", type=float, default=d.max_sync_duration_s,
                   help="longest audio for /v1/mix and /v1/params [600]")
    g.add_argument("--max-channels", type=int, default=d.max_channels, help="[8]")
    g.add_argument("--max-sample-rate", type=int, default=d.max_sample_rate, help="Hz [192000]")
    g.add_argument("--render-threads", type=int, default=d.render_threads, help="renders at once per worker [2]")
    g.add_argument("--max-pending", type=int, default=d.max_pending, help="renders waiting per worker before 503 [32]")
    g.add_argument("--request-timeout-s", type=float, default=d.request_timeout_s, help="[60]")
    g.add_argument("--upload-timeout-s", type=float, default=d.upload_timeout_s, help="[120]")
    g.add_argument("--torch-threads", type=int, default=None, help="torch threads per worker [1, as dmst render: the compiled render "
                   "loops use the cores]")
    g.add_argument("--job-threads", type=int, default=d.job_threads, help="jobs run at once per worker [1]")
    g.add_argument("--job-lease-s", type=float, default=d.job_lease_s, help="a running job silent this long is "
                   "resumed elsewhere [20]")
    g.add_argument("--max-finetune-s", type=float, default=d.max_finetune_s, help="[3600]")
    g.add_argument("--retention-s", type=float, default=d.retention_s, help="finished jobs are removed after [86400]")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv=None) -> int:
    """Parse the options, check them, and run uvicorn (returns 2 with a one-line error for a bad option)."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as e:
        print(f'dmst serve: error: the service needs its extra ({e.name} is missing); pip install "dmst[serve]"',
              file=sys.stderr)
        return 2
    from pydantic import ValidationError

    from ..encoder import ModelError, load_model
    from .settings import ServeSettings

    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k in ServeSettings.model_fields and v is not None}
    try:
        settings = ServeSettings(**fields)
        settings.check_bind()
        load_model(settings.model)  # a wrong --model fails here, with one line, not in every worker
    except ValidationError as e:
        err = e.errors()[0]
        print(f"dmst serve: error: --{'-'.join(str(x) for x in err['loc']).replace('_', '-')}: {err['msg']}",
              file=sys.stderr)
        return 2
    except (ValueError, ModelError) as e:
        print(f"dmst serve: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(settings.data_dir, exist_ok=True)
    os.environ.update(settings.to_env())
    uvicorn.run("dmst.serve.app:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=args.log_level, timeout_keep_alive=5,
                timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
