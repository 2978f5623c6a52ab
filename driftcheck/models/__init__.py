"""Built-in models, made locally (no hub): the random tiny Qwen2 for plumbing checks, and
how an engine runs them on the CPU (engine_env)."""
