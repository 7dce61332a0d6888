"""The HTTP ingest service: batch, single, item, NDJSON stream, webhooks and WebSocket routes
(app, stream, webhooks, ws), API keys and scopes (auth), the door's checks (jsoncheck, body,
values), limits (ratelimit, edge), and its error bodies and OpenAPI docs (errors, docs).

It imports the source SDK (sources.base, sources.publisher) and pipelines.core.
"""
