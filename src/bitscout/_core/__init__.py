"""Small shared pieces below everything else: validation helpers, the name registry,
atomic files, TOML reading, this process's CPUs and background imports."""
