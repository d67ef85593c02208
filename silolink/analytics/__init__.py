"""Federated analytics shared by both sides: the query language, its vectors and the
secure-aggregation protocol. No storage, no gRPC."""
