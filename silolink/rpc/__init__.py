"""gRPC plumbing shared by both daemons: status mapping, the guard interceptor, the server
factory and channel builders. Domain logic never imports this package."""
