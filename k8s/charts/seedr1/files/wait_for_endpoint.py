"""Wait until an OpenAI-compatible endpoint is up: GET <base_url>/models answers with any HTTP status below 500
(401 included: the server is there, the request just had no key). Exit 0 then, or 1 once `seconds` have passed.

    python wait_for_endpoint.py BASE_URL SECONDS [INTERVAL]

The evaluation pod's init container (the RayService's Service has no endpoints until the model is loaded); Python's
standard library only.
"""
from __future__ import annotations

import http.client
import sys
import time
import urllib.error
import urllib.request


def status_of(url: str) -> tuple[int | None, str]:
    """(HTTP status, what happened); status None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return e.code, f"HTTP {e.code}"
    except (OSError, http.client.HTTPException) as e:  # refused, no DNS name yet, timed out, connection dropped
        return None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    url, seconds = argv[1].rstrip("/") + "/models", float(argv[2])
    interval = float(argv[3]) if len(argv) == 4 else 10.0
    deadline = time.monotonic() + seconds
    while True:
        status, what = status_of(url)
        if status is not None and status < 500:
            print(f"{url}: {what}: up", flush=True)
            return 0
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"{url} not up after {seconds:g}s (last: {what})", file=sys.stderr, flush=True)
            return 1
        print(f"{url}: {what}; waiting ({left:.0f}s left)", flush=True)
        time.sleep(min(interval, left))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
