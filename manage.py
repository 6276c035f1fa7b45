#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# Commands that only read code: no embedded servers start for them.
NO_SERVERS_NEEDED = {"help", "--help", "-h", "version", "--version"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import embedded, env

    if embedded.needed() and not set(sys.argv[1:2]) & NO_SERVERS_NEEDED:
        embedded.ensure_started(env.data_dir())
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
