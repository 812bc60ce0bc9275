"""``python -m workqueue`` runs the CLI."""

from workqueue.cli import main

main()
