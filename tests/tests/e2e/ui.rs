//! `tollgate check` UI tests (filled in separately).
