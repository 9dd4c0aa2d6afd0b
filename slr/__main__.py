"""``python -m slr``: the Hydra app (see ``slr.run``)."""
from slr.run import main

if __name__ == "__main__":
    main()
