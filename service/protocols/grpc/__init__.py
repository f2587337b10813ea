"""gRPC: the Open Inference Protocol's ``inference.GRPCInferenceService`` (``inference``),
TF Serving's ``tensorflow.serving.PredictionService`` (``prediction``) and
``grpc.health.v1.Health``, served by ``server.GrpcListener`` on the event loop that serves
HTTP. Imported only by a process that serves gRPC (``service.app``)."""
