"""The CLI's client of the daemon's API: HTTP over the Unix socket (httpx's `uds=`), or over
TCP with the bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ClientError(Exception):
    """The request failed; the message is for the user (what happened, what to do)."""

    def __init__(self, message: str, status: int | None = None, reasons: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.reasons = reasons or []


class Client:
    def __init__(
        self,
        socket: Path | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.where = url or str(socket)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if url is not None:
            self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)
        else:
            assert socket is not None
            transport = httpx.HTTPTransport(uds=str(socket))
            self.http = httpx.Client(
                transport=transport, base_url="http://trainsup", headers=headers, timeout=timeout
            )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as e:
            raise ClientError(
                f"cannot reach the trainsup daemon at {self.where} ({e}); is `trainsup serve` "
                "running? (--socket or $TRAINSUP_SOCKET choose another socket)"
            ) from None
        except httpx.HTTPError as e:
            raise ClientError(f"the daemon at {self.where} did not answer: {e}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"error": r.text}
            raise ClientError(
                str(body.get("error", r.text)), r.status_code, list(body.get("reasons") or [])
            )
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    def chart_png(self, job_id: int) -> bytes:
        """The job's chart.png as the daemon serves it (`GET /jobs/ID/chart.png`)."""
        r = self.request("GET", f"/jobs/{job_id}/chart.png")
        if not r.content.startswith(PNG_SIGNATURE):
            # A proxy's login page or the like in front of the daemon: not a chart to write.
            raise ClientError(
                f"{self.where} answered /jobs/{job_id}/chart.png with "
                f"{r.headers.get('Content-Type', 'no content type')}, not a PNG image"
            )
        return r.content
