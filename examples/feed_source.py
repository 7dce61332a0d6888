"""A complete custom pull source: the items of an RSS 2.0 feed, each new item once.

This is the example docs/custom-sources.md walks through; tests/sources/test_base_example.py
runs it against a real broker. Run it on its own::

    python -m examples.feed_source https://example.org/feed.xml --vertical news --type article

or from ``qanat collect`` with ``kind: examples.feed_source:FeedSource``.

>>> item = ElementTree.fromstring(
...     "<item><title>Hi</title><guid>g1</guid><pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate>"
...     "</item>"
... )
>>> feed_item(item)["date"]
'2026-03-02T10:00:00.000000Z'
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree

import httpx
from pydantic import Field

from pipelines.core.config import CoreSettings, KafkaSettings, load
from pipelines.core.records import format_time
from sources.base import Page, PullSource, PullSourceSettings
from sources.retry import http_request
from sources.runner import run_sources


class FeedSettings(PullSourceSettings):
    """An RSS 2.0 feed to follow."""

    url: str = Field(description="Address of the RSS 2.0 feed.")
    timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the feed to answer.")


def feed_item(element: ElementTree.Element) -> dict[str, Any]:
    """One ``<item>`` as a record in the item shape (title, body, date, source_id)."""
    published = element.findtext("pubDate")
    guid = element.findtext("guid") or element.findtext("link")
    return {
        "title": element.findtext("title") or "",
        "body": element.findtext("description"),
        "link": element.findtext("link"),
        "date": format_time(parsedate_to_datetime(published)) if published else None,
        "source_id": guid,
    }


class FeedSource(PullSource[FeedSettings]):
    """Follows an RSS feed: each poll fetches it and produces the items published after
    the newest one seen before (the cursor, an RFC 3339 time).

    >>> settings = FeedSettings(kind="feed", name="blog", vertical="news", type="article",
    ...                         url="http://127.0.0.1:8000/feed.xml", schedule=300)
    >>> FeedSource(settings, KafkaSettings().topics).settings.schedule.every
    300.0
    """

    kind = "feed"
    settings_model = FeedSettings

    def open(self) -> None:
        self.client = httpx.Client(timeout=self.settings.timeout_s, follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def poll(self, cursor: Any) -> Iterator[Page]:
        response = http_request(
            self.client, "GET", self.settings.url, self.settings.retry, self.wait
        )
        items = [
            feed_item(element) for element in ElementTree.fromstring(response.content).iter("item")
        ]
        newer = sorted(
            (item for item in items if item["date"] and (cursor is None or item["date"] > cursor)),
            key=lambda item: item["date"],
        )
        if newer:  # one page; its cursor is saved once Kafka has the items
            yield Page(newer, newer[-1]["date"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Follow an RSS feed into qanat's raw topic.")
    parser.add_argument("url")
    parser.add_argument("--vertical", required=True)
    parser.add_argument("--type", required=True)
    parser.add_argument("--name", default="feed", help="names the saved cursor")
    parser.add_argument("--every", type=float, default=300.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="poll once, then exit")
    args = parser.parse_args(argv)
    settings = FeedSettings(
        kind="feed",
        name=args.name,
        vertical=args.vertical,
        type=args.type,
        url=args.url,
        schedule=args.every,
    )
    kafka = load(KafkaSettings)
    run_sources([FeedSource(settings, kafka.topics, once=args.once)], kafka, load(CoreSettings))


if __name__ == "__main__":
    main()
