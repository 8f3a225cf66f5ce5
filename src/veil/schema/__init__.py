"""The API's schema: OpenAPI documents and JSON Schemas read for the shapes of response bodies.

    shape.py     JSON Schema → Shapes ($ref resolved with `referencing`)
    openapi.py   OpenAPI 3.0 / 3.1 (and Swagger 2.0) documents, operations, route matching
    reach.py     field paths against shapes: producible, locations, "did you mean", body misfits
    coverage.py  every schema field's fate under a compiled rule (the engine's explain)
    check.py     the policy checked against its schemas (`veil check`, `veil test`, `veil coverage`)
    starter.py   a starter policy set from an OpenAPI document (`veil init`)
"""
