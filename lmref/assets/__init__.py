"""Files shipped with lmref: the example photo (example.jpg, made by make_example.py) and the
trained models (models/*.safetensors, listed by ``lmref models``)."""
