"""Reading run and sweep folders, the comparison tables and ``slr-report`` (no torch: reports start fast)."""
