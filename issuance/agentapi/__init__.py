"""The agent gRPC API: TLS per tenant (SNI) in front of a grpc.aio AgentAPI servicer."""
