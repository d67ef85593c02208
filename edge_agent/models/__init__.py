"""The site's local model store (installed ONNX models)."""
