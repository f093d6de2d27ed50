"""Local devnet: homes and processes (network.py), `ita devnet up|status|down` (orchestrate.py),
random order flow (loadgen.py) and a controllable TCP proxy for partition tests (proxy.py)."""
