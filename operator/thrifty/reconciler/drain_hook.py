"""The engine's preStop hook: wait while vLLM has requests in flight, then let SIGTERM come.

Rendered verbatim into the pod (`python3 -c <this file> SLEEP BUDGET METRICS_URL`), so it uses the
standard library only. vLLM's own SIGTERM drain can lose the last answers (vLLM 0.32 closes its
output socket when the engine process exits, whatever is still unread), so the drain happens here,
where the engine runs undisturbed: sleep while the endpoint removal spreads, then poll /metrics
until no request runs or waits, for at most BUDGET seconds. An engine that does not answer has
nothing to drain."""

import sys
import time
import urllib.request

BUSY = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def busy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            lines = response.read().decode().splitlines()
        return any(line.startswith(BUSY) and float(line.split()[-1]) > 0 for line in lines)
    except (OSError, ValueError):
        return False


def main(sleep_seconds: float, budget_seconds: float, url: str) -> None:
    time.sleep(sleep_seconds)
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline and busy(url):
        time.sleep(1.0)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
