"""Published tables -> runs -> evaluation -> diffs and reports."""
