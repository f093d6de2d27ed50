"""The ita validator / full-node process: storage, WAL, signing guard, mempool, gRPC services."""
