"""Token usage from answers: what each tenant is metered for.

Non-streamed answers carry `usage` in their JSON. A streamed answer carries it only in a final
chunk (`choices: []`, `usage: {...}`) when the request asked with
`stream_options.include_usage`; the gateway asks on the client's behalf when it did not, and then
keeps that chunk from the client, who sees the stream it asked for. `SseUsage` reads a stream
event by event as it passes; only events that mention `"usage"` are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EVENT_END = b"\n\n"
MAX_PENDING_BYTES = 1024 * 1024
"""An event longer than this is passed on unread: a stream never buffers without bound."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(answer: Any) -> Usage | None:
    """The `usage` of a decoded answer or chunk, None when absent or malformed."""
    if not isinstance(answer, dict):
        return None
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def json_usage(body: bytes) -> Usage | None:
    try:
        return usage_of(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return None


def ask_for_usage(request: dict[str, Any]) -> bool:
    """Sets `stream_options.include_usage` on a streaming request that lacks it; True when it
    did (the usage chunk is then the gateway's, not the client's)."""
    if not request.get("stream"):
        return False
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    request["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return True


class SseUsage:
    """Passes a server-sent-event stream through, event by event, noting its usage."""

    def __init__(self, *, hide_usage_chunk: bool) -> None:
        self._hide = hide_usage_chunk
        self._pending = b""
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send on: complete events (minus a hidden usage chunk); a partial event
        waits for its end."""
        data = self._pending + chunk
        end = data.rfind(EVENT_END)
        if end < 0:
            if len(data) > MAX_PENDING_BYTES:
                self._pending = b""
                return data
            self._pending = data
            return b""
        complete, self._pending = data[: end + len(EVENT_END)], data[end + len(EVENT_END) :]
        if b'"usage"' not in complete:
            return complete
        out = []
        for event in complete.split(EVENT_END)[:-1]:
            if b'"usage"' in event and self._read(event) and self._hide:
                continue
            out.append(event + EVENT_END)
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _read(self, event: bytes) -> bool:
        """Notes the usage of a usage-only chunk; True when the event is one."""
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    decoded = json.loads(line[5:])
                except (ValueError, UnicodeDecodeError):
                    return False
                usage = usage_of(decoded)
                if usage is not None:
                    self.usage = usage
                    return isinstance(decoded, dict) and not decoded.get("choices")
        return False
