"""The validator process (see node/main.py)."""

import os

# gRPC's C core prints plain-text lines ("Got goaway", ...) to stderr that break JSON logs;
# keep only its errors unless the operator asks for more (must happen before grpc is imported).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
