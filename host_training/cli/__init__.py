"""`coral-train`'s subcommands, one module per job: each has `add_parser(sub)` and `run(args)`."""

import logging

# the logger every subcommand reports through: its name appears in the user's log lines
# ("... WARNING host_training: ..."), so it stays the package's, not the module's
log = logging.getLogger("host_training")
