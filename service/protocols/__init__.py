"""The wire protocols, one module each: thin codecs that decode a request into the data
plane's terms, call it, and encode its answer. ``native`` (``/predict``, ``/softmax``,
``/models``), ``tfserving`` (TF Serving REST, ``/v1``), ``v2`` (the Open Inference
Protocol, with ``v2_tensors`` for its tensors); ``schemas`` holds the shared bodies;
``grpc`` serves the Open Inference Protocol, TF Serving and the health service over gRPC."""
