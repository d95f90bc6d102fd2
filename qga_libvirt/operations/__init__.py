"""What people install a guest-agent client for, built on the typed commands."""
