"""Speed and memory of lmref against torch_impl (eager) and onnxruntime: ``python -m benchmarks.bench``."""
