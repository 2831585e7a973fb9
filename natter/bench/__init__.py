"""``natter bench``: bounded, loopback-only benchmarks of natter against two reference servers.

Layout (one thing per module):

- :mod:`natter.bench.spec`: scenarios, targets and the pure layout of sockets, rooms and senders.
- :mod:`natter.bench.stats`: percentiles, loss/duplicate accounting, ratios (pure).
- :mod:`natter.bench.procstat`: CPU time and RSS of processes from ``/proc``.
- :mod:`natter.bench.targets`: starting and stopping natter (its own isolated stack) and the
  references in ``benchmarks/reference/``, and handing out tokens.
- :mod:`natter.bench.rawws`: a minimal RFC 6455 client as an ``asyncio.Protocol`` (no task or
  ``await`` per received frame), so the load generator leaves the CPU to the server.
- :mod:`natter.bench.clients`: the client side of each protocol (natter frames over
  :mod:`~natter.bench.rawws`; Socket.IO through python-socketio's ``AsyncClient``).
- :mod:`natter.bench.worker`: one load-generator process holding many sockets.
- :mod:`natter.bench.runner`: one run = target + worker processes + measured phases -> a dict.
- :mod:`natter.bench.report`: JSON files, rich tables, ratios; :mod:`natter.bench.plot`: the PNG.
- :mod:`natter.bench.cli`: the ``natter bench`` typer sub-app.

docs/benchmarks.md gives the method and the measured numbers.
"""
