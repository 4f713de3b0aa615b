"""Small shared utilities (IO, configs, run directories, shared data lookup)."""
