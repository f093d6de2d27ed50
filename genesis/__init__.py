"""Genesis: the human JSON schema (schema.py), its validation, and the devnet genesis (devnet.py, devnet.json)."""
