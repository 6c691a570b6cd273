"""GET /api/v1/openapi.json describes exactly the API the app serves."""

from __future__ import annotations

import re

from gateway.api.openapi import openapi_document


def served_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "openapi.document":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_the_document_is_public_and_lists_every_route_the_app_serves(app, client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served_routes(app)


def test_every_reference_in_the_document_resolves():
    document = openapi_document()
    text = repr(document)
    for kind, name in re.findall(r"#/components/(\w+)/(\w+)", text):
        assert name in document["components"][kind], f"{kind}/{name} is referenced but not defined"
