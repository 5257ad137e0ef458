"""orbit-packager: Fleet Orbit installers and the TUF update repository they trust."""

__version__ = "0.1.0"
