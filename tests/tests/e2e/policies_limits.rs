//! key-auth, rate-limit and quota end to end.
