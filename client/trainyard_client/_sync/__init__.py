# GENERATED from trainyard_client/_async/__init__.py by scripts/generate_sync_client.py: edit that file.
