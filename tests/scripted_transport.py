"""A scripted transport for the client's unit tests: a requests adapter that answers each request
with the next item of its script, so a test sees the exact requests, retries and waits without a
server."""

from __future__ import annotations

import io
import json

import requests
from requests.adapters import BaseAdapter


class Scripted(BaseAdapter):
    """Answers each request with the next item: (status, json-or-bytes, headers) or an exception."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.requests = []
        self.sends = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        self.sends.append(kwargs)
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        status, payload, headers = item
        resp = requests.Response()
        resp.status_code = status
        resp.headers.update({"Content-Type": "application/json", **headers})
        if isinstance(payload, io.IOBase):
            resp.raw = payload
        else:
            resp.raw = io.BytesIO(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        resp.request = request
        resp.url = request.url
        return resp

    def close(self):
        pass
