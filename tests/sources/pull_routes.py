"""The REST routes (one per pagination style) and the GraphQL endpoint that the pull-source
tests poll, over a Catalog."""

from __future__ import annotations

from tests.sources.pull_server import Catalog, PullServer, Reply, Request

PAGE = 10
TOKEN = "s3cret"


def serve_rest(
    server: PullServer,
    catalog: Catalog,
    bad_offsets: set[int] | None = None,
    down_pages: set[int] | None = None,
) -> None:
    """/products (bearer auth, page numbers, data.items; pages in ``down_pages`` answer
    503), /offset (a bare list; offsets in ``bad_offsets`` answer 400), /cursor (items +
    meta.next), /link (Link header)."""
    bad = bad_offsets if bad_offsets is not None else set()
    down = down_pages if down_pages is not None else set()

    @server.route("GET", "/products")
    def products(request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"error": "unauthorized"})
        rows = catalog.since(request.query.get("updated_since"))
        page, size = int(request.query["page"]), int(request.query["per_page"])
        if page in down:
            return Reply(503, {"error": "down"})
        return Reply(200, {"data": {"items": rows[(page - 1) * size : page * size]}})

    @server.route("GET", "/offset")
    def offset(request: Request) -> Reply:
        start, limit = int(request.query["offset"]), int(request.query["limit"])
        if start in bad:
            return Reply(400, {"error": {"code": "bad_page", "message": "corrupt page"}})
        return Reply(200, catalog.since(request.query.get("since"))[start : start + limit])

    @server.route("GET", "/cursor")
    def cursor(request: Request) -> Reply:
        start = int(request.query.get("cursor", "0"))
        rows = catalog.since(request.query.get("since"))
        following = str(start + PAGE) if start + PAGE < len(rows) else None
        return Reply(200, {"items": rows[start : start + PAGE], "meta": {"next": following}})

    @server.route("GET", "/link")
    def link(request: Request) -> Reply:
        page = int(request.query.get("page", "1"))
        rows = catalog.since(request.query.get("since"))
        headers = {}
        if page * PAGE < len(rows):
            headers["Link"] = f'</link?page={page + 1}>; rel="next", </link?page=1>; rel="first"'
        return Reply(200, rows[(page - 1) * PAGE : page * PAGE], headers)


def serve_graphql(server: PullServer, catalog: Catalog) -> None:
    """POST /graphql: a tiny resolver of ``products(first, after, updatedSince)`` returning
    ``nodes`` and ``pageInfo``; a query without ``products`` gets a GraphQL error."""

    @server.route("POST", "/graphql")
    def graphql(request: Request) -> Reply:
        query, variables = request.body["query"], request.body.get("variables") or {}
        if "products" not in query:
            return Reply(200, {"data": None, "errors": [{"message": "Cannot query field"}]})
        rows = catalog.since(variables.get("since"))
        start, first = int(variables.get("after") or 0), int(variables.get("first", PAGE))
        nodes = [
            {"id": r["id"], "name": r["title"], "updatedAt": r["updated_at"]}
            for r in rows[start : start + first]
        ]
        page_info = {"endCursor": str(start + len(nodes)), "hasNextPage": start + first < len(rows)}
        return Reply(200, {"data": {"products": {"nodes": nodes, "pageInfo": page_info}}})
