"""torch_impl.models: one file per architecture, mirroring lmref.models."""
