"""``python -m loanstream``: the ``loanstream`` command, for where the script is not on PATH."""

from loanstream.cli import main

if __name__ == "__main__":
    main()
