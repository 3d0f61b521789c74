"""`python -m trainyard_client.cli`: the `trainyard` command."""

from trainyard_client.cli import main

main()
