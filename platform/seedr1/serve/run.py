"""Starting the Serve application from a ServeConfig (embedded Ray, or the cluster at RAY_ADDRESS)."""
from __future__ import annotations

from seedr1.config import ServeConfig


def start(cfg: ServeConfig) -> str:
    """Deploy the app (non-blocking) and return its base URL (``.../v1``)."""
    from ray import serve

    from seedr1.serve.app import build
    from seedr1.cluster.demands import serve_groups
    from seedr1.cluster.stores import check_inputs
    from seedr1.train.launch import start_ray, worker_env

    app = build(cfg)  # refuses early, before any Ray work, when no API key is configured
    check_inputs(cfg)
    start_ray("serve", serve_groups(cfg), cfg.cluster, worker_env())
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name="seedr1", route_prefix=cfg.route_prefix)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    url = f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}/v1"
    print(f"[serve] {cfg.served_model_name} ({cfg.model}) at {url} (auth={cfg.auth})", flush=True)
    return url
