"""Dead-letter tooling: a dead letter as read (letter), filters and stats (filters), scanning
the topic (read), the replay state topic (state), dry-run
and replay (replay), export and import (export), purge, and background jobs (jobs).

It imports pipelines.core and the transform (a dry run re-validates with the transform's own
code), never sources, sinks, the control plane or the CLI.
"""
