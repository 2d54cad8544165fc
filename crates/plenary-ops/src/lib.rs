//! Operations plumbing shared by every Plenary subcommand.
