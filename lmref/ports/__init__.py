"""Other runtimes' model files checked against golden bundles.

``lmref.ports.litert``: LiteRT (TFLite) ``.tflite`` files -- their static facts (tensor ranks, op
versions, the minimum runtime version) read with the standard library alone, and a run in
ai-edge-litert or tflite-runtime (imported only when a file is run) paired with a bundle's ops.
The ONNX path lives in ``lmref.bundle`` (``run_onnx``).
"""
