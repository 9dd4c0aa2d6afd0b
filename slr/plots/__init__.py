"""Tables in, figures out: the dynamics of a run, sweeps, the landscape (matplotlib; never torch)."""
