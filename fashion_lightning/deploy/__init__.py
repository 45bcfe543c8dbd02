"""A trained model in use: export to ONNX or TorchScript (`export`, int8 in `quantize`), and the
HTTP server with its page (`serve`, the request path in `serve_api`, model files in `runtimes`)."""
