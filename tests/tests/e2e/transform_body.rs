//! transform on bodies end to end: JSON field edits, JSON<->XML, size caps.
