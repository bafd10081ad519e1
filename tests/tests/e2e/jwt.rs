//! jwt end to end.
