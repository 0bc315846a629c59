"""The command line: ``python -m fusionrs_hf.testing.hub_server`` (see :func:`main`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import HubServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusionrs_hf.testing.hub_server",
        description="Serve the Hugging Face Hub API on 127.0.0.1 (repos in memory, gone when it stops) for trying "
                    "`fusionrs push`, `fusionrs check`, datasets streaming and benchmarks without the real Hub. "
                    "Prints the environment to export, then serves until Ctrl-C.")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="X",
                   help="delay added before every answer, in milliseconds (default 0)")
    p.add_argument("--bandwidth-mbps", type=float, default=None, metavar="Y",
                   help="cap on the bytes the server sends (downloads; uploads are not capped), in megabits per "
                        "second, shared by all connections (default: no cap)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a :class:`HubServer` from a shell until Ctrl-C (or SIGTERM); exit 0 when stopped, 2 on bad options."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"hub_server: error: --port {args.port} is not a port (0-65535)", file=sys.stderr)
        return 2
    if args.latency_ms < 0 or (args.bandwidth_mbps is not None and args.bandwidth_mbps <= 0):
        print("hub_server: error: --latency-ms must be >= 0 and --bandwidth-mbps > 0", file=sys.stderr)
        return 2
    bps = args.bandwidth_mbps * 1e6 / 8 if args.bandwidth_mbps else None
    server = HubServer(latency_s=args.latency_ms / 1000, bandwidth_bps=bps, port=args.port)
    try:
        server.start()
    except OSError as e:
        print(f"hub_server: error: cannot listen on 127.0.0.1:{args.port} ({e.strerror or e})", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    env = server.env()
    knobs = [f"latency {args.latency_ms:g} ms" if args.latency_ms else "no added latency",
             f"downloads capped at {args.bandwidth_mbps:g} Mbps" if bps else "no bandwidth cap"]
    print(f"# Hub API on {server.url} ({', '.join(knobs)}); no token needed. Repos are kept in memory until "
          "it stops.", flush=True)
    print("# In another shell, export these (HF_HUB_DISABLE_XET=1: the server offers LFS uploads, not xet):",
          flush=True)
    for k, v in env.items():
        print(f"export {k}={v}", flush=True)
    print("# Serving; press Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("# stopped", file=sys.stderr, flush=True)
    return 0
