"""Export to MINDIR / ONNX / AIR and inference on the exported files."""
