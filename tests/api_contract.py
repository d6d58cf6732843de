"""The API's answers checked against the OpenAPI description the app serves.

`Contract` finds the operation that documents a request (path templates such as
/api/documents/{doc_id} resolved) and checks the answer: its status must be documented, its
media type must be one the description names, and a JSON body must match the schema
(jsonschema, Draft 2020-12, the dialect of OpenAPI 3.1). An error of a route the description
does not name must still be an `Error`.

`checking_test_clients()` puts that check behind every Flask test client, so every test that
calls the API through one checks the contract on the way.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import weakref
from collections.abc import Callable, Iterator

from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

SPEC_URL = "/api/openapi.json"
NO_BODY = (204, 304)


def template_pattern(template: str) -> re.Pattern:
    """A regex matching the concrete paths of a path template: {name} is one path segment."""
    parts = re.split(r"(\{[^/{}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + r"\Z")


class Contract:
    """The served description of one app, and the checks of answers against it."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.components = spec.get("components", {})
        self.routes = [(template_pattern(path), path, item) for path, item in spec["paths"].items()]
        # Literal paths first: /api/documents/x must not be read as a template when a literal matches.
        self.routes.sort(key=lambda route: route[1].count("{"))
        self.validators: dict[str, Draft202012Validator] = {}
        self.seen: set[tuple[str, str, str]] = set()  # (path template, method, status) checked

    def described(self, path: str) -> bool:
        """Whether answers on this path are the description's business."""
        return path.startswith("/api/") or any(pattern.match(path) for pattern, _, _ in self.routes)

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        """(path template, operation) documenting the request, or None."""
        for pattern, template, item in self.routes:
            if pattern.match(path) and method.lower() in item:
                return template, item[method.lower()]
        return None

    def validator(self, schema: dict) -> Draft202012Validator:
        """A validator for a schema whose references point into this description's components."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self.validators:
            self.validators[key] = Draft202012Validator({**schema, "components": self.components})
        return self.validators[key]

    def schema_problems(self, schema: dict, body: object) -> list[str]:
        """What is wrong with a body, each with where it is."""
        found = sorted(self.validator(schema).iter_errors(body), key=lambda e: list(e.absolute_path))
        return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found[:8]]

    def problems(self, method: str, path: str, status: int, mimetype: str, body: Callable[[], bytes]) -> list[str]:
        """How an answer breaks the description (empty when it does not)."""
        if method in ("HEAD", "OPTIONS") or not self.described(path) or status in NO_BODY or 300 <= status < 400:
            return []
        found = self.operation(method, path)
        error = {"$ref": "#/components/schemas/Error"}
        if found is None:
            if status < 400:
                return [f"{method} {path} answered {status} but the description has no such operation"]
            return self.json_problems(error, mimetype, body)
        template, op = found
        response = op["responses"].get(str(status)) or op["responses"].get("default")
        if response is None:
            return [f"{method} {template} answered {status}, which it does not document "
                    f"(documented: {', '.join(op['responses'])})"]
        self.seen.add((template, method.lower(), str(status)))
        content = response.get("content", {})
        media = next((m for m in content if fnmatch.fnmatch(mimetype, m)), None)
        if media is None:
            return [f"{method} {template} answered {status} as {mimetype!r}; documented: {', '.join(content)}"]
        if media != "application/json":
            return []
        broken = self.json_problems(content[media]["schema"], mimetype, body)
        return [f"{method} {template} {status}: {p}" for p in broken]

    def json_problems(self, schema: dict, mimetype: str, body: Callable[[], bytes]) -> list[str]:
        """How a JSON answer breaks a schema."""
        if mimetype != "application/json":
            return [f"expected JSON, got {mimetype!r}"]
        try:
            data = json.loads(body())
        except ValueError as exc:
            return [f"the body is not JSON: {exc}"]
        return self.schema_problems(schema, data)

    def check(self, method: str, path: str, status: int, mimetype: str, body: Callable[[], bytes] | bytes) -> None:
        """Raise AssertionError when an answer breaks the description."""
        read = body if callable(body) else lambda: body
        problems = self.problems(method.upper(), path, status, mimetype, read)
        if problems:
            raise AssertionError("the answer breaks the OpenAPI description:\n  " + "\n  ".join(problems))


_contracts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def served_contract(app, open_request: Callable) -> Contract | None:
    """The contract the app serves at /api/openapi.json (None for an app without one)."""
    if app not in _contracts:
        if "openapi.openapi_json" not in app.view_functions:
            _contracts[app] = None
        else:
            hosts = app.config.get("ALLOWED_HOST_NAMES")
            host = sorted(hosts)[0] if hosts else "localhost"
            answer = open_request(app.test_client(), SPEC_URL, base_url=f"http://{host}")
            assert answer.status_code == 200, f"{SPEC_URL} answered {answer.status_code}"
            _contracts[app] = Contract(answer.get_json())
    return _contracts[app]


@contextlib.contextmanager
def checking_test_clients() -> Iterator[None]:
    """While active, every answer a Flask test client receives is checked against its app's description."""
    original = FlaskClient.open

    def open_and_check(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        contract = served_contract(self.application, original)
        request = response.request
        if contract is not None and request is not None:
            contract.check(request.method, request.path, response.status_code, response.mimetype or "",
                           response.get_data)
        return response

    FlaskClient.open = open_and_check
    try:
        yield
    finally:
        FlaskClient.open = original
