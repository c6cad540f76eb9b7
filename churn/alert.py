"""Monitoring alerts (drift and performance): POST the JSON summary to MONITORING_WEBHOOK_URL
with a bearer token.

Retries with exponential back-off inside a fixed time box, and reports (never raises) when the
endpoint stays down. Neither the token nor the URL (which may carry credentials of its own) is
ever logged, returned or put in an error message: only the URL's scheme and host are shown.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 0.5
ATTEMPT_TIMEOUT_SECONDS = 5.0
TIME_BOX_SECONDS = 20.0


def safe_target(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}"


def send_alert(
    url: str,
    token: str,
    payload: dict[str, Any],
    attempts: int = ATTEMPTS,
    time_box: float = TIME_BOX_SECONDS,
    attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
    backoff: float = FIRST_BACKOFF_SECONDS,
) -> dict[str, Any]:
    """Returns {"sent": bool, "attempts": n, "status": http status or None, "error": text or None}."""
    body = json.dumps(payload).encode()
    deadline = time.monotonic() + time_box
    target = safe_target(url)
    error: str | None = None
    status: int | None = None
    tried = 0
    for attempt in range(attempts):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"gave up after {time_box:.0f}s"
            break
        tried += 1
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=min(attempt_timeout, remaining)) as response:
                status = response.status
                return {"sent": True, "attempts": tried, "status": status, "error": None, "target": target}
        except urllib.error.HTTPError as exc:
            status = exc.code
            error = f"{target} answered HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # a client error will not fix itself: do not hammer the endpoint
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{target} unreachable: {type(reason).__name__}"
        sleep = min(backoff * (2**attempt), max(0.0, deadline - time.monotonic()))
        if attempt < attempts - 1 and sleep > 0:
            time.sleep(sleep)
    return {"sent": False, "attempts": tried, "status": status, "error": error, "target": target}


def alert_if_configured(
    settings, summary: Mapping[str, Any], needed: bool, quiet_reason: str, log
) -> dict[str, Any]:
    """`--alert` of the monitoring commands: POST `summary` when `needed`, if the Secret is set;
    reports (never raises) what happened, without the token or the URL's path."""
    import sys

    if settings.monitoring_webhook_url is None or settings.monitoring_api_token is None:
        print(
            "alerting is not configured (MONITORING_WEBHOOK_URL and MONITORING_API_TOKEN unset)",
            file=sys.stderr,
        )
        return {"sent": False, "error": "not configured"}
    if not needed:
        return {"sent": False, "error": None, "reason": quiet_reason}
    result = send_alert(
        settings.monitoring_webhook_url.get_secret_value(),
        settings.monitoring_api_token.get_secret_value(),
        {k: v for k, v in summary.items() if k != "alert"},
    )
    if result["sent"]:
        log.info("alert sent to %s (attempt %d)", result["target"], result["attempts"])
    else:
        log.error("alert not delivered after %d attempt(s): %s", result["attempts"], result["error"])
    return result
