"""Genesis: the human JSON schema and its validation (schema.py), the devnet genesis (devnet.py/.json)."""
