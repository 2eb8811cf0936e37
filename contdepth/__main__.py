"""``python -m contdepth ...``: the same as the ``contdepth`` command."""

import sys

if __name__ == "__main__":
    try:
        from .cli import main
    except KeyboardInterrupt:  # Ctrl-C while the library is imported: one line, not a traceback
        print("\ncontdepth: interrupted while starting; nothing was done", file=sys.stderr)
        raise SystemExit(130)
    raise SystemExit(main())
