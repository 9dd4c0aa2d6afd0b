"""``python -m slr``: the Hydra app (see ``slr.app.run``)."""
from slr.app.run import main

if __name__ == "__main__":
    main()
