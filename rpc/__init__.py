"""ita indexer: replays committed blocks through stf/ and serves HTTP + WebSocket market data.

See rpc/README.md for the process, the endpoints, the WebSocket protocol and the limits;
``rpc.service.main`` / ``rpc.service.run_indexer`` are the entry points (``ita indexer``).
"""
