"""``qanat dlq ...``: inspect, replay, export/import and purge dead letters.

Every command reads the ``<prefix>.dlq`` topic (the source of truth, see
:mod:`pipelines.dlq.read`) and takes the same filters.
"""

from __future__ import annotations

import typer

from pipelines.cli.dlq_inspect import dlq_ls, dlq_show, dlq_stats
from pipelines.cli.dlq_purge import dlq_purge
from pipelines.cli.dlq_replay import dlq_export, dlq_import, dlq_replay

dlq_app = typer.Typer(
    help="Dead letters (the <prefix>.dlq topic): stats, ls, show, replay, export, import, purge.",
    no_args_is_help=True,
)
dlq_app.command("stats")(dlq_stats)
dlq_app.command("ls")(dlq_ls)
dlq_app.command("show")(dlq_show)
dlq_app.command("replay")(dlq_replay)
dlq_app.command("export")(dlq_export)
dlq_app.command("import")(dlq_import)
dlq_app.command("purge")(dlq_purge)
