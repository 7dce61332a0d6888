"""`qanat …` (Typer) and `qanat up`: the composition root, the one place that knows every
part and wires them (main), with one module per command group.

It may import every part; nothing imports it.
"""
