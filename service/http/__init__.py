"""HTTP plumbing shared by every protocol: the gateway (request ids, keys, admission,
metrics and access logs, the hot paths), request bodies, responses, error answers,
the route class of the hot endpoints, and the request-head deadline."""
