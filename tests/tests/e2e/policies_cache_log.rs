//! cache and access-log end to end.
